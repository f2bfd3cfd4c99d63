"""Tests for jangotw.outbound: MX lookup, the ESMTP client protocol, the connection pool, delivery."""
