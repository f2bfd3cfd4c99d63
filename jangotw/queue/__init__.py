"""Delivery queue: retries, signed VERP return paths, RFC 3464 notices and incoming bounces.

Outbound mail leaves with a per-recipient VERP return path (verp), so an
asynchronous bounce names the message and recipient it is about; bounces that
come back are sorted into hard, soft and auto-replies (bounces). Failures and
delays the relay sees itself go back to the sender as RFC 3464 delivery status
notifications (dsn). Follows RFC 3461-3464, RFC 3834 and RFC 5321.
"""
