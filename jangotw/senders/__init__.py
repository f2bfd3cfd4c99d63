"""Sender authentication: SPF (RFC 7208), DKIM verification (RFC 6376, 8463) and DMARC alignment
(RFC 7489) on twisted.names, deciding whether mail authorised only by its From address really comes
from that domain, and recording the verdict as an Authentication-Results field (RFC 8601)."""
