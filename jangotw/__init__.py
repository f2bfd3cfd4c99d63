"""jangotw: a self-hosted mail relay and sending platform on Twisted."""
