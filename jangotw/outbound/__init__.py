"""Outbound delivery: hand a spooled message to the recipients' mail exchangers or a smarthost.

mx.py finds the next hop (RFC 5321 section 5, RFC 7505 null MX) through
twisted.names; protocol.py speaks ESMTP to it (RFC 5321, 2920 pipelining, 3207
STARTTLS, 6152 8BITMIME, 1870 SIZE, 4954 AUTH); pool.py keeps idle sessions for
reuse; client.py ties them together as the L{jangotw.interfaces.IDeliverer} the
queue calls, turning every outcome into per-recipient results.
"""
