"""Authorisation of relay sessions through a twisted.cred portal."""
