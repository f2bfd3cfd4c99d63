"""Shared test fixtures: a loopback DNS server and a scriptable capture SMTP server."""
