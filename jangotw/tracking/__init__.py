"""Open, click and unsubscribe tracking: signed tokens and the tracking web server."""
