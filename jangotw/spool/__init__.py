"""The durable on-disk spool: a message is on disk, fsynced, before it is acknowledged."""
