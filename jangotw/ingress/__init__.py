"""SMTP ingress: the ESMTP server protocol, its listeners, DATA streaming and per-phase policy."""
