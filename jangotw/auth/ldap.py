# -*- test-case-name: tests.auth.test_ldap -*-
"""Logins of corporate users checked against an LDAP directory (search, then bind).

The service account finds exactly one entry for the login name (escaped, RFC
4515, so C{*)(uid=*} matches nobody but a user literally called that), the
user's password is checked by a simple bind as that entry on a fresh
connection, and the groups the entry belongs to are mapped through
C{[ldap] group_map} to a local account and its capabilities. The directory
decides who someone is; the local account decides what their mail is charged
to.

ldap3 blocks, so every call runs in the C{ldap} thread pool; only the
resulting L{LDAPLogin} or failure crosses back to the reactor thread. A
refusal (wrong password, unknown user, no mapped group) is
L{UnauthorizedLogin}; a directory that cannot answer (unreachable, slow, TLS
trouble, misconfigured service account) is L{TemporaryError}, so a client is
told to retry rather than that its password is wrong. The reasons carried by
both are for the log: they name users and DNs, never a password.
"""
from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import ldap3
from attrs import frozen
from ldap3.core.exceptions import LDAPException, LDAPInvalidDnError, LDAPSASLPrepError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..config import GroupMapping
from ..errors import TemporaryError
from .credentials import Secret

__all__ = ["LDAPDirectory", "LDAPLogin"]

# Result codes of a user's bind that mean "not this password / not allowed to log in";
# any other failure says the directory is in trouble (busy, unavailable, ...).
_REFUSED_BIND = frozenset({
    48,  # inappropriateAuthentication
    49,  # invalidCredentials
    50,  # insufficientAccessRights
    53,  # unwillingToPerform (e.g. a locked or unauthenticated bind)
})
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4


@frozen
class LDAPLogin:
    """A directory user whose password was right, and what their groups allow."""

    username: str
    dn: str
    account: str  # the local account the first mapped group names
    capabilities: frozenset[str]


@frozen
class LDAPDirectory:
    """Search-then-bind logins against one LDAP server, C{[ldap]} in the configuration."""

    url: str
    user_base: str
    group_base: str
    group_map: tuple[GroupMapping, ...]
    reactor: IReactorFromThreads
    threadpool: ThreadPool
    bind_dn: str = ""  # "": search anonymously
    bind_password: Secret = Secret("")
    start_tls: bool = False
    user_filter: str = "(uid={username})"
    group_filter: str = "(member={dn})"
    timeout: float = 5.0
    ca_certificate: str = ""  # "": the system CAs

    def authenticate(self, username: str, password: str | Secret) -> "Deferred[LDAPLogin]":
        """Check C{password} for the directory user C{username}.

        An empty password is refused at once, without contacting the server:
        many servers treat a simple bind with a DN and no password as an
        anonymous bind and report success (RFC 4513 section 5.1.2).

        @return: fires with the L{LDAPLogin}; fails with L{UnauthorizedLogin}
            (wrong password, unknown or ambiguous user, no mapped group) or
            L{TemporaryError} (server unreachable, timeout, TLS failure,
            service account refused, unexpected result).
        """
        secret = password if isinstance(password, Secret) else Secret(password)
        if not username:
            return fail(UnauthorizedLogin("ldap: empty user name"))
        if not secret.reveal():
            return fail(UnauthorizedLogin(f"ldap: empty password for {username!r} (never sent as a bind)"))
        return deferToThreadPool(self.reactor, self.threadpool, self._login, username, secret)

    # -- in the ldap thread pool ---------------------------------------------

    def _login(self, username: str, password: Secret) -> LDAPLogin:
        try:
            server = self._server()
            service = self._bind(server, self.bind_dn, self.bind_password, user=False)
            try:
                dn = self._find_user(service, username)
                self._close(self._bind(server, dn, password, user=True))
                groups = self._groups(service, username, dn)
            finally:
                self._close(service)
        except (LDAPException, OSError) as error:
            raise TemporaryError(f"ldap: {self.url} unusable: {type(error).__name__}: {error}") from None
        for mapping in self.group_map:
            if _normal_dn(mapping.group_dn) in groups:
                return LDAPLogin(username, dn, mapping.account, mapping.capabilities)
        raise UnauthorizedLogin(f"ldap: {dn} is in no mapped group")

    def _server(self) -> ldap3.Server:
        tls = None
        if self.start_tls or self.url.startswith("ldaps://"):
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self.ca_certificate or None,
                            sni=urlsplit(self.url).hostname)
        return ldap3.Server(self.url, tls=tls, connect_timeout=self.timeout, get_info=ldap3.NONE)

    def _bind(self, server: ldap3.Server, dn: str, password: Secret, user: bool) -> ldap3.Connection:
        """A new connection bound as C{dn} (anonymously when C{dn} is empty: never for a user)."""
        if user and not dn:
            raise UnauthorizedLogin("ldap: the user search returned an empty DN")
        connection = ldap3.Connection(
            server,
            user=dn or None,
            password=password.reveal() or None,
            authentication=ldap3.SIMPLE if dn else ldap3.ANONYMOUS,
            read_only=True,
            auto_referrals=False,
            raise_exceptions=False,
            receive_timeout=self.timeout,
        )
        bound = False
        try:
            connection.open()
            if self.start_tls:
                connection.start_tls()
            bound = connection.bind()
            result = dict(connection.result or {})
        except LDAPSASLPrepError:  # RFC 4013 forbids the password's characters: no such password exists
            if not user:
                raise
            raise UnauthorizedLogin(f"ldap: password for {dn} refused by SASLprep") from None
        finally:
            if not bound:
                self._close(connection)
        if bound:
            return connection
        if user and result["result"] in _REFUSED_BIND:
            raise UnauthorizedLogin(f"ldap: bind as {dn} refused: {result['description']}")
        who = f"user {dn}" if user else f"service account {dn or '(anonymous)'}"
        raise TemporaryError(f"ldap: bind as {who} failed: {result['result']} {result['description']}")

    def _search(self, connection: ldap3.Connection, base: str, query: str, limit: int) -> tuple[int, list[str]]:
        connection.search(base, query, ldap3.SUBTREE, attributes=ldap3.NO_ATTRIBUTES,
                          size_limit=limit, time_limit=max(1, int(self.timeout)))
        found = [entry["dn"] for entry in connection.response or () if entry.get("type") == "searchResEntry"]
        return connection.result["result"], found

    def _find_user(self, connection: ldap3.Connection, username: str) -> str:
        query = self.user_filter.format(username=escape_filter_chars(username))
        result, found = self._search(connection, self.user_base, query, limit=2)
        if result == _SIZE_LIMIT_EXCEEDED or len(found) > 1:
            raise UnauthorizedLogin(f"ldap: {query} matches several entries")
        if result != _SUCCESS:
            raise TemporaryError(f"ldap: user search {query} failed: {result} {connection.result['description']}")
        if not found:
            raise UnauthorizedLogin(f"ldap: no entry matches {query}")
        return found[0]

    def _groups(self, connection: ldap3.Connection, username: str, dn: str) -> frozenset[str]:
        query = self.group_filter.format(dn=escape_filter_chars(dn), username=escape_filter_chars(username))
        result, found = self._search(connection, self.group_base, query, limit=0)
        if result != _SUCCESS:
            raise TemporaryError(f"ldap: group search {query} failed: {result} {connection.result['description']}")
        return frozenset(map(_normal_dn, found))

    @staticmethod
    def _close(connection: ldap3.Connection) -> None:
        try:
            connection.unbind()
        except (LDAPException, OSError):
            pass  # the server went away; the socket is closed either way


def _normal_dn(dn: str) -> str:
    """A DN compared as directories do: attribute types and (caseIgnore) values folded, spaces stripped."""
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPInvalidDnError:
        return dn.strip().lower()
    return "".join(f"{attribute.lower()}={value.lower()}{separator}" for attribute, value, separator in parts)
