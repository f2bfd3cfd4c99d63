# -*- test-case-name: tests.ingress.test_gate -*-
"""Per-phase decisions for an SMTP session: AUTH, RCPT and end of DATA.

The protocol in L{jangotw.ingress.session} parses and replies; everything that
decides whether mail may be relayed, and for which account, lives here. Each
refusal is a L{ReplyError}. Mail authorised only by its From address (and
initiation by From address) must also be authenticated for the From domain
when C{senders} is set (L{jangotw.senders.verification}).
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import BinaryIO

from attrs import define, field, frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..auth.checkers import AmbiguousAccount
from ..auth.credentials import ClientAddress, FromAddress, Secret, SecretLogin
from ..auth.principals import AddressNotAuthorised, Principal, TooManyFailures, TwoFactorRequired
from ..auth.realm import IAccountAvatar, IPrincipalAvatar
from ..errors import BOUNCED_TEXT, UNSUBSCRIBED_TEXT, ReplyError, TemporaryError, relaying_denied
from ..initiation.desk import InitiationDesk, mailbox_owner
from ..initiation.parse import InitiationCommand
from ..initiation.rules import FROM_NOT_VERIFIED
from ..interfaces import IAccountStore, IAuthorisationStore, ISuppressionStore
from ..model import BOUNCE_LIST, UNSUBSCRIBE_LIST, Account, AuthMethod, Envelope, TLSInfo
from ..queue.routing import is_bounce_address
from ..senders.verification import FromVerification
from .headers import HeaderSection

__all__ = [
    "Session",
    "Authorisation",
    "Gate",
    "AUTH_FAILED",
    "AUTH_USE_TOKEN",
    "AUTH_ADDRESS_REFUSED",
    "AUTH_THROTTLED",
    "AUTH_UNAVAILABLE",
    "AMBIGUOUS_ACCOUNT",
    "FROM_NOT_AUTHORISED",
    "SENDER_UNVERIFIED",
    "UNKNOWN_MAILBOX",
]

log = Logger()

AUTH_FAILED = ReplyError(535, "5.7.8", "Authentication credentials invalid")
AUTH_USE_TOKEN = ReplyError(
    535, "5.7.8", "Two-factor authentication is on for this login: use an API token as the password")
AUTH_ADDRESS_REFUSED = ReplyError(535, "5.7.1", "Authentication from this IP address is not allowed for this login")
AUTH_THROTTLED = ReplyError(454, "4.7.0", "Too many failed authentication attempts; try again later")
AUTH_UNAVAILABLE = ReplyError(454, "4.7.0", "Temporary authentication failure")  # RFC 4954 section 6
AMBIGUOUS_ACCOUNT = ReplyError(
    550, "5.7.1", "Several accounts authorise this address; name one in an X-SMTPUsername header"
)
FROM_NOT_AUTHORISED = ReplyError(550, "5.7.1", "The From address is not authorised for this account")
UNKNOWN_MAILBOX = ReplyError(550, "5.1.1", "Recipient address rejected: no such mailbox here")
ONE_INITIATION_MAILBOX = ReplyError(550, "5.7.1", "Address a mailing to one initiation mailbox alone")
SENDER_UNVERIFIED = ReplyError(451, "4.7.0", "Temporary failure verifying the sender; try again later")
FROM_NOT_VERIFIED_REFUSAL = ReplyError(550, "5.7.1", FROM_NOT_VERIFIED)


@define
class Session:
    """What one connection has established (RSET keeps it; STARTTLS resets it)."""

    id: str
    peer_ip: str
    helo: str = ""
    esmtp: bool = False
    tls: TLSInfo | None = None
    account: Account | None = None  # set by SMTP AUTH
    principal: Principal | None = None  # the login SMTP AUTH established (names sales@alice in logs)
    ip_authorised: bool | None = None  # looked up once, on first need
    ip_account: Account | None = None  # the one account the client IP authorises, if unambiguous
    initiation: InitiationCommand | None = None  # read from the Subject of the message being received
    sender_accounts: dict[str, frozenset[str]] = field(factory=dict)  # envelope sender -> account names

    @property
    def address(self) -> IPv4Address | IPv6Address:
        return ip_address(self.peer_ip)

    def reset_for_tls(self, tls: TLSInfo | None) -> None:
        """RFC 3207: forget everything learnt before the TLS handshake."""
        self.helo, self.esmtp, self.account, self.principal, self.tls = "", False, None, None, tls


@frozen
class Authorisation:
    """Who a message belongs to, and how that was established."""

    account: str | None
    method: AuthMethod
    initiation_list: str = ""  # the list an initiation message goes to
    authentication_results: str = ""  # for mail authorised by its From address, when verified


@define
class Gate:
    """The relay policy: no open relay, and each message charged to exactly one account."""

    portal: Portal
    accounts: IAccountStore
    authorisations: IAuthorisationStore
    lists: ISuppressionStore
    initiation_desk: InitiationDesk | None = None
    initiation_domain: str = ""
    bounce_domain: str = ""
    local_domains: frozenset[str] = frozenset()
    senders: FromVerification | None = None  # None: a From address authorises without SPF or DKIM

    def is_initiation(self, envelope: Envelope) -> bool:
        """Addressed (only) to initiation mailboxes: the Subject carries a mailing command."""
        return bool(self.initiation_domain) and bool(envelope.recipients) and all(
            recipient.rpartition("@")[2].lower() == self.initiation_domain for recipient in envelope.recipients)

    def is_local(self, recipient: str) -> bool:
        domain = recipient.rpartition("@")[2].lower()
        return (domain in self.local_domains or domain == self.initiation_domain
                or is_bounce_address(recipient, self.bounce_domain))

    # -- AUTH ----------------------------------------------------------------

    def authenticate(self, session: Session, username: str, password: Secret) -> "Deferred[Account]":
        """Fire with the account charged (C{session.principal} names the login); fail with a ReplyError.

        The Authenticator behind the portal throttles and logs every failure.
        """
        return Deferred.fromCoroutine(self._authenticate(session, username, password))

    async def _authenticate(self, session: Session, username: str, password: Secret) -> Account:
        try:
            _, principal, _ = await self.portal.login(
                SecretLogin(username, password, session.address), None, IPrincipalAvatar)
        except TooManyFailures as error:
            raise AUTH_THROTTLED.because(str(error)) from None
        except TwoFactorRequired as error:
            raise AUTH_USE_TOKEN.because(str(error)) from None
        except AddressNotAuthorised as error:
            raise AUTH_ADDRESS_REFUSED.because(str(error)) from None
        except UnauthorizedLogin as error:
            raise AUTH_FAILED.because(str(error)) from None
        except TemporaryError as error:  # the directory could not answer: not the client's failure
            raise AUTH_UNAVAILABLE.because(str(error)) from None
        session.principal = principal
        return principal.account  # type: ignore[no-any-return]

    # -- RCPT ----------------------------------------------------------------

    def recipient(self, session: Session, envelope: Envelope, recipient: str) -> "Deferred[None]":
        """Fires when C{recipient} may be added to the envelope; fails with a ReplyError."""
        return Deferred.fromCoroutine(self._recipient(session, envelope, recipient))

    async def _recipient(self, session: Session, envelope: Envelope, recipient: str) -> None:
        if self.is_local(recipient):
            return await self._local_recipient(recipient)
        if session.account is not None or await self._ip_authorised(session):
            return await self._refuse_suppressed(session.account or session.ip_account, recipient)
        if envelope.sender and await self._from_candidates(session, envelope.sender):
            return None
        raise relaying_denied(session.peer_ip, envelope.sender or "<>").because(
            f"no account authorises client {session.peer_ip} or sender {envelope.sender!r}"
        )

    async def _local_recipient(self, recipient: str) -> None:
        local, _, domain = recipient.rpartition("@")
        domain = domain.lower()
        if domain == self.initiation_domain:  # alice@ or alice+login@: the login is checked after DATA
            if await self.accounts.get_account(mailbox_owner(local)[0]) is None:
                raise UNKNOWN_MAILBOX.because(f"no account for initiation mailbox {local!r}")
        elif is_bounce_address(recipient, self.bounce_domain) and domain not in self.local_domains:
            if not local.lower().startswith(("bounces+", "unsubscribe+")):
                raise UNKNOWN_MAILBOX.because("not a VERP return path or unsubscribe address")

    async def _ip_authorised(self, session: Session) -> bool:
        if session.ip_authorised is None:
            found = await self.authorisations.accounts_for_ip(session.address)
            session.ip_authorised = bool(found)
            best = [account for account, prefix in found if prefix == found[0][1]] if found else []
            session.ip_account = best[0] if len(best) == 1 else None
        return session.ip_authorised

    async def _refuse_suppressed(self, account: Account | None, recipient: str) -> None:
        """With suppression_reply = "reject", a suppressed recipient is refused in-session."""
        if account is None or account.settings.suppression_reply != "reject":
            return
        if await self.lists.suppressed(account.name, BOUNCE_LIST, [recipient]):
            raise ReplyError(550, "5.1.1", BOUNCED_TEXT).because(f"{recipient} on the Bounce list of {account.name}")
        if not account.settings.bypass_unsubscribe and await self.lists.suppressed(
                account.name, UNSUBSCRIBE_LIST, [recipient]):
            raise ReplyError(550, "5.7.1", UNSUBSCRIBED_TEXT).because(
                f"{recipient} on the Unsubscribe list of {account.name}")

    async def _from_candidates(self, session: Session, sender: str) -> frozenset[str]:
        """Names of the accounts that authorise envelope sender C{sender}, looked up once."""
        key = sender.lower()
        if key not in session.sender_accounts:
            found = await self.authorisations.accounts_for_from(sender)
            session.sender_accounts[key] = frozenset(account.name for account in found)
        return session.sender_accounts[key]

    # -- end of DATA ---------------------------------------------------------

    def body_copy(self, session: Session, envelope: Envelope) -> BinaryIO | None:
        """A scratch file for a copy of the message when its authorisation may rest on its From address
        alone and must then be verified (DKIM needs the body); None otherwise.

        @raise OSError: the file could not be created.
        """
        if self.senders is None or session.account is not None or session.ip_authorised:
            return None
        if all(self.is_local(recipient) for recipient in envelope.recipients) and not self.is_initiation(envelope):
            return None
        return self.senders.open_copy()

    def authorise(
        self, session: Session, envelope: Envelope, headers: HeaderSection, copy: BinaryIO | None = None
    ) -> "Deferred[Authorisation]":
        """Decide which account the message belongs to; fails with a ReplyError.

        C{copy} holds the message as spooled when L{body_copy} made one.
        """
        return Deferred.fromCoroutine(self._authorise(session, envelope, headers, copy))

    async def _authorise(self, session: Session, envelope: Envelope, headers: HeaderSection,
                         copy: BinaryIO | None) -> Authorisation:
        initiation = [r for r in envelope.recipients if r.rpartition("@")[2].lower() == self.initiation_domain]
        if initiation and self.initiation_desk is not None:
            return await self._initiation(session, envelope, headers, copy)
        if all(self.is_local(recipient) for recipient in envelope.recipients):
            return Authorisation(None, AuthMethod.LOCAL)
        hint = headers.smtp_username
        results = ""
        if session.account is not None:
            account, method = session.account, AuthMethod.SMTP_AUTH
        elif await self._ip_authorised(session):
            account = await self._login(session, headers, ClientAddress(session.address, hint))
            method = AuthMethod.IP
        else:
            sender = headers.sender
            within = await self._from_candidates(session, envelope.sender) if envelope.sender else frozenset()
            if sender is None:
                raise relaying_denied(session.peer_ip, envelope.sender or "<>").because("no header From")
            account = await self._login(session, headers, FromAddress(sender.address, hint, within))
            method = AuthMethod.FROM
            results = await self._verified(session, envelope, headers, copy,
                                           relaying_denied(session.peer_ip, sender.as_text))
        if account.settings.restrict_from and method is not AuthMethod.FROM:
            await self._check_restricted_from(account, headers)
        return Authorisation(account.name, method, authentication_results=results)

    async def _verified(self, session: Session, envelope: Envelope, headers: HeaderSection, copy: BinaryIO | None,
                        refusal: ReplyError) -> str:
        """The Authentication-Results of mail authorised by its From address alone; raises C{refusal}
        unless SPF or DKIM authenticates it for the From domain (aligned, as DMARC says)."""
        sender = headers.sender
        if self.senders is None or sender is None:
            return ""
        signatures = [raw for name, raw in headers.fields if name == b"dkim-signature"]
        verdict = await self.senders.verify(session.peer_ip, session.helo, envelope.sender, sender.address,
                                            signatures, copy)
        if verdict.passed:
            return verdict.header
        if verdict.temporary:
            raise SENDER_UNVERIFIED.because(verdict.reason)
        raise refusal.because(verdict.reason)

    async def _initiation(self, session: Session, envelope: Envelope, headers: HeaderSection,
                          copy: BinaryIO | None) -> Authorisation:
        assert self.initiation_desk is not None
        if len(envelope.recipients) != 1:
            raise ONE_INITIATION_MAILBOX.because(f"{len(envelope.recipients)} recipients with an initiation mailbox")
        sender = headers.sender
        order = await self.initiation_desk.check(envelope.recipients[0].rpartition("@")[0], session.initiation,
                                                 sender.address if sender else "", session.peer_ip)
        results = await self._verified(session, envelope, headers, copy, FROM_NOT_VERIFIED_REFUSAL) if order.by_from \
            else ""
        return Authorisation(order.account, AuthMethod.INITIATION, initiation_list=order.list_name,
                             authentication_results=results)

    async def _login(self, session: Session, headers: HeaderSection, credentials: object) -> Account:
        try:
            _, account, _ = await self.portal.login(credentials, None, IAccountAvatar)
        except AmbiguousAccount:
            raise AMBIGUOUS_ACCOUNT.because(f"{credentials!r} fits several accounts") from None
        except UnauthorizedLogin:
            sender = headers.sender
            shown = sender.as_text if sender else "<>"
            raise relaying_denied(session.peer_ip, shown).because(f"{credentials!r} refused") from None
        return account  # type: ignore[no-any-return]

    async def _check_restricted_from(self, account: Account, headers: HeaderSection) -> None:
        sender = headers.sender
        if sender is not None:
            found = await self.authorisations.accounts_for_from(sender.address)
            if any(candidate.id == account.id for candidate in found):
                return
        raise FROM_NOT_AUTHORISED.because(f"account {account.name} is restricted to its From addresses")
