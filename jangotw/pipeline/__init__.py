"""The policy and rewrite pipeline between the spool and delivery: suppression, quota, wrapping, tracking, List-Unsubscribe, DKIM."""
