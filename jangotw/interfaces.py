"""Every contract between layers, as zope.interface declarations.

One narrow interface per concern, so a store or a fake implements only what its
users call, and C{verifyObject} checks it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Sequence
    from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

    from twisted.internet.defer import Deferred

    from .model import (Account, ApiToken, ContactList, DomainKey, DomainStatus, IPRule, ListMember, Login,
                        OutboundMessage, RecipientResult, SpoolRecord, Suppression, TrackingEvent, TwoFactor, Usage)
    from .records import CopiedRecord, Record

__all__ = [
    "IAccountStore",
    "IAuthorisationStore",
    "ISuppressionStore",
    "ISendLog",
    "IQuotaStore",
    "ITrackingStore",
    "IDomainStore",
    "IStore",
    "IListStore",
    "ICredentialStore",
    "IFailureStore",
    "IStoreExport",
    "IStoreImport",
    "ISpool",
    "ISpoolFile",
    "IClientAddress",
    "IFromAddress",
    "ISecretLogin",
    "IDeliverer",
]


class IAccountStore(Interface):
    """Accounts: names, password hashes, enabled state and settings.

    Account names are matched case-insensitively. Every method returns a
    Deferred; methods naming an account that does not exist fail with
    L{jangotw.errors.InputError}.
    """

    def add_account(name: str, password_hash: str | None) -> "Deferred[Account]":  # type: ignore[empty-body]
        """Create an account; fails with InputError if the name is taken."""

    def get_account(name: str) -> "Deferred[Account | None]":  # type: ignore[empty-body]
        """The account called C{name}, or None."""

    def list_accounts() -> "Deferred[list[Account]]":  # type: ignore[empty-body]
        """Every account, ordered by name."""

    def set_disabled(name: str, disabled: bool) -> "Deferred[Account]":  # type: ignore[empty-body]
        """Disable or enable an account; a disabled account authorises nothing."""

    def set_password_hash(name: str, password_hash: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Replace the account's password hash."""

    def set_setting(name: str, key: str, value: object) -> "Deferred[Account]":  # type: ignore[empty-body]
        """Store one already-validated setting (see L{jangotw.model.AccountSettings})."""


class IAuthorisationStore(Interface):
    """What authorises relaying for an account: client networks and From addresses."""

    def add_ip(account: str, network: "IPv4Network | IPv6Network") -> "Deferred[None]":  # type: ignore[empty-body]
        """Authorise a network (a single address is a /32 or /128); adding twice is harmless."""

    def remove_ip(account: str, network: "IPv4Network | IPv6Network") -> "Deferred[bool]":  # type: ignore[empty-body]
        """Remove an authorised network; fires with whether it was there."""

    def list_ips(account: str) -> "Deferred[list[str]]":  # type: ignore[empty-body]
        """The account's authorised networks in CIDR notation."""

    def accounts_for_ip(address: "IPv4Address | IPv6Address") -> "Deferred[list[tuple[Account, int]]]":  # type: ignore[empty-body]
        """Enabled accounts with a network containing C{address}, each with that network's
        prefix length (IPv4 lengths counted as IPv4-mapped IPv6, i.e. +96), most specific first."""

    def add_from(account: str, address: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Authorise a From address (C{user@example.com}) or a whole domain (C{@example.com})."""

    def remove_from(account: str, address: str) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Remove an authorised From address; fires with whether it was there."""

    def list_from(account: str) -> "Deferred[list[str]]":  # type: ignore[empty-body]
        """The account's authorised From addresses."""

    def accounts_for_from(address: str) -> "Deferred[list[Account]]":  # type: ignore[empty-body]
        """Enabled accounts that authorise C{address}, exactly or through its domain."""


class ISuppressionStore(Interface):
    """Per-account suppression lists ("bounce", "unsubscribe"): addresses never delivered to.

    An entry is an address (matched case-insensitively) or a whole domain written
    C{@example.com}. Methods naming an unknown account fail with InputError.
    """

    def suppress(account: str, list_name: str, address: str, reason: str) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Add an entry (its reason and time recorded); fires with whether it is new.
        Adding again keeps the first time and replaces the reason."""

    def unsuppress(account: str, list_name: str, address: str) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Remove an entry; fires with whether it was there."""

    def suppressed(account: str, list_name: str, addresses: "Sequence[str]") -> "Deferred[set[str]]":  # type: ignore[empty-body]
        """Which of C{addresses} (as given) are on the list, directly or by domain."""

    def list_suppressed(account: str, list_name: str) -> "Deferred[list[Suppression]]":  # type: ignore[empty-body]
        """Every entry of the list, by address."""

    def count_soft_bounce(account: str, address: str) -> "Deferred[int]":  # type: ignore[empty-body]
        """Count one more soft bounce for an address; fires with the consecutive count."""

    def clear_soft_bounces(account: str, address: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """A delivery succeeded: the consecutive soft-bounce count starts again."""


class ISendLog(Interface):
    """Which account sent which message to whom: maps VERP bounce tokens back to recipients."""

    def record_send(message_id: str, account: str, recipients: "Sequence[str]", at: float) -> "Deferred[None]":  # type: ignore[empty-body]
        """Remember a message's recipients by their index in C{recipients}."""

    def find_send(message_id: str, index: int) -> "Deferred[tuple[str, str] | None]":  # type: ignore[empty-body]
        """(account, recipient) for a message id and recipient index, or None."""


class IQuotaStore(Interface):
    """Monthly usage counters; a month is "YYYY-MM" (UTC)."""

    def charge(account: str, month: str, messages: int, size: int, max_messages: int, max_bytes: int,
               overage_allowed: bool) -> "Deferred[Usage]":  # type: ignore[empty-body]
        """Add C{messages} and C{size} bytes to the month atomically (concurrent charges never
        overshoot). With a limit (0: none) that the charge would pass: refused (usage unchanged,
        C{charged} false) unless C{overage_allowed}, which charges and counts the excess as overage."""

    def usage(account: str, month: str) -> "Deferred[Usage]":  # type: ignore[empty-body]
        """The month's usage so far (zeros when none)."""

    def mark_warning(account: str, month: str, level: int) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Remember that the level% warning (80, 90, 100) was sent; fires with whether it is new."""


class ITrackingStore(Interface):
    """Tracked links and what recipients did."""

    def record_links(message_id: str, urls: "Sequence[str]") -> "Deferred[None]":  # type: ignore[empty-body]
        """Remember a message's link destinations by index (tracking tokens carry the index)."""

    def link(message_id: str, index: int) -> "Deferred[str | None]":  # type: ignore[empty-body]
        """A link's destination, or None."""

    def record_event(account: str, event: "TrackingEvent") -> "Deferred[None]":  # type: ignore[empty-body]
        """Store an open, click, unsubscribe (or send/bounce) event."""

    def event_counts(account: str, message_id: str | None = None) -> "Deferred[dict[str, int]]":  # type: ignore[empty-body]
        """Events by kind for an account, or one of its messages."""


class IDomainStore(Interface):
    """Sender domains, their DKIM keys (one per selector) and the status of their DNS records.

    Domains are stored lower-cased and matched in any case; a domain belongs to
    one account. Methods naming a domain, or a selector of it, that is not
    stored fail with InputError.
    """

    def add_domain(key: "DomainKey") -> "Deferred[DomainKey]":  # type: ignore[empty-body]
        """Store a new key beside the domain's others; fails with InputError if another account has
        the domain or the domain already has (or had) the selector."""

    def domain_key(domain: str) -> "Deferred[DomainKey | None]":  # type: ignore[empty-body]
        """The newest key of a domain that is not retired, or None."""

    def domain_keys(domain: str) -> "Deferred[list[DomainKey]]":  # type: ignore[empty-body]
        """Every key of a domain, retired ones too, oldest first (empty: no such domain)."""

    def list_domains(account: str) -> "Deferred[list[DomainKey]]":  # type: ignore[empty-body]
        """The keys of an account's domains that are not retired, by domain, then oldest first."""

    def domain_status(domain: str) -> "Deferred[DomainStatus | None]":  # type: ignore[empty-body]
        """The domain's last check result, or None for a domain not stored."""

    def record_check(domain: str, at: float, verified: bool, selectors: "Sequence[str]") -> "Deferred[DomainStatus]":  # type: ignore[empty-body]
        """Store a check made at C{at}: the domain's verdict, and which keys' records matched
        (their C{verified_at} becomes C{at}; every other key's becomes None)."""

    def set_forced(domain: str, selector: str, forced: bool) -> "Deferred[DomainKey]":  # type: ignore[empty-body]
        """Let a key sign before its record verified (or stop that); fires with the key."""

    def retire_key(domain: str, selector: str, at: float) -> "Deferred[DomainKey]":  # type: ignore[empty-body]
        """Stop signing with a key and stop listing it (retiring twice keeps the first time)."""


class IStore(IAccountStore, IAuthorisationStore, ISuppressionStore, ISendLog, IQuotaStore, ITrackingStore,
             IDomainStore):
    """A complete state store, with a lifecycle."""

    def close() -> "Deferred[None]":  # type: ignore[empty-body]
        """Release connections and threads."""


class IListStore(Interface):
    """Contact lists for mass mailings an account initiates, and the account's initiation password.

    Not part of L{IStore}: a store keeps contact lists only if it declares this
    too. List names and member addresses match case-insensitively (compared as
    L{jangotw.model.contact_key}), keeping the spelling first given for a list
    and the latest for a member. Every method returns a Deferred; naming an
    account that does not exist fails with L{jangotw.errors.InputError}, and
    so does naming a list the account does not have (the message names it).
    """

    def add_list(account: str, name: str, from_name: str, from_address: str) -> "Deferred[ContactList]":  # type: ignore[empty-body]
        """Create an empty list; fails with InputError if the account has one of that name in any case."""

    def set_list_from(account: str, name: str, from_name: str, from_address: str) -> "Deferred[ContactList]":  # type: ignore[empty-body]
        """Replace the list's From display name and address (C{""}: none)."""

    def get_list(account: str, name: str) -> "Deferred[ContactList | None]":  # type: ignore[empty-body]
        """The list, with its current member count, or None if the account has no such list."""

    def lists(account: str) -> "Deferred[list[ContactList]]":  # type: ignore[empty-body]
        """Every list of the account, ordered by name ignoring case."""

    def delete_list(account: str, name: str) -> "Deferred[ContactList]":  # type: ignore[empty-body]
        """Delete the list and all its members (if it was the default list, the account then has
        none); fires with the list as it was."""

    def set_default_list(account: str, name: str) -> "Deferred[ContactList]":  # type: ignore[empty-body]
        """Make the list the account's default (replacing any other)."""

    def default_list(account: str) -> "Deferred[ContactList | None]":  # type: ignore[empty-body]
        """The account's default list, or None."""

    def add_members(account: str, name: str, members: "Sequence[ListMember]") -> "Deferred[int]":  # type: ignore[empty-body]
        """Add or update members in one transaction; fires with how many addresses were new.

        A member already on the list (in any case) gets the given spelling and
        fields; within C{members} the last of equal addresses wins. A member
        with an empty address fails the whole batch with InputError.
        """

    def remove_member(account: str, name: str, address: str) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Remove an address (any case); fires with whether it was on the list."""

    def members(account: str, name: str, after: str | None = None, limit: int = 1000) -> "Deferred[list[ListMember]]":  # type: ignore[empty-body]
        """One page of members, ordered by address key: at most C{limit} (at least 1) after the
        address C{after} (None: from the start). Pass a page's last address to read the next,
        so no caller holds a whole list at once; an empty page is the end."""

    def set_initiation_password_hash(account: str, password_hash: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Store the hash of the password that authorises mass mailings; never the login password's."""

    def initiation_password_hash(account: str) -> "Deferred[str | None]":  # type: ignore[empty-body]
        """The initiation password hash, or None when none was set."""

    def save_campaign(account: str, campaign_id: str, document: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Store (replace) a mailing's progress, a JSON document, so every node can show it."""

    def campaigns(account: str) -> "Deferred[list[str]]":  # type: ignore[empty-body]
        """The account's campaign documents, by campaign id (queue ids, so oldest first)."""

    def campaign(account: str, campaign_id: str) -> "Deferred[str | None]":  # type: ignore[empty-body]
        """One campaign document (the id matched exactly), or None."""


class ICredentialStore(Interface):
    """Additional logins, API tokens, login IP rules and two-factor state of accounts.

    Not part of L{IStore}: a store keeps these only if it declares this too.
    A login is named by (account, login name); login name L{jangotw.model.PRIMARY}
    (C{""}) is the account's own login wherever a method takes one. Names match
    case-insensitively. Every method returns a Deferred; naming an account that
    does not exist, or a login the account does not have, fails with
    L{jangotw.errors.InputError} whose message names it. Deleting an account is
    not part of the store; deleting a login deletes its tokens, IP rules and
    two-factor state with it.
    """

    def add_login(login: "Login") -> "Deferred[Login]":  # type: ignore[empty-body]
        """Create an additional login; fails with InputError if the account has one of that name."""

    def get_login(account: str, name: str) -> "Deferred[Login | None]":  # type: ignore[empty-body]
        """The login, or None (the account must exist)."""

    def list_logins(account: str) -> "Deferred[list[Login]]":  # type: ignore[empty-body]
        """The account's additional logins, by name ignoring case."""

    def update_login(account: str, name: str, capabilities: "frozenset[str] | None" = None,
                     password_hash: str | None = None, disabled: bool | None = None) -> "Deferred[Login]":  # type: ignore[empty-body]
        """Change what is given (None: unchanged); fires with the login as it now is."""

    def delete_login(account: str, name: str) -> "Deferred[Login]":  # type: ignore[empty-body]
        """Delete the login with its tokens, IP rules and two-factor state; fires with it as it was."""

    def add_token(token: "ApiToken") -> "Deferred[ApiToken]":  # type: ignore[empty-body]
        """Store a new token (its login must exist unless PRIMARY); ids are unique."""

    def get_token(token_id: str) -> "Deferred[ApiToken | None]":  # type: ignore[empty-body]
        """The token with this id (exact match), revoked or not, or None."""

    def list_tokens(account: str) -> "Deferred[list[ApiToken]]":  # type: ignore[empty-body]
        """Every token of the account and its logins, revoked ones too, oldest first."""

    def revoke_token(token_id: str, at: float) -> "Deferred[ApiToken]":  # type: ignore[empty-body]
        """Mark the token revoked at C{at} (revoking twice keeps the first time); InputError if unknown.
        Every node sharing the store refuses it from then on."""

    def touch_token(token_id: str, at: float) -> "Deferred[None]":  # type: ignore[empty-body]
        """Record that the token was used at C{at} (unknown ids are ignored)."""

    def add_ip_rule(rule: "IPRule") -> "Deferred[bool]":  # type: ignore[empty-body]
        """Add a rule; a rule with the same range for the same login replaces its scopes.
        Fires with whether the range is new."""

    def remove_ip_rule(account: str, login: str, first: str, last: str) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Remove a login's rule for that range; fires with whether it was there."""

    def ip_rules(account: str, login: str | None = None) -> "Deferred[list[IPRule]]":  # type: ignore[empty-body]
        """The rules of one login (PRIMARY: the account's own), or with None every rule of the
        account and its logins; ordered by login, then by when they were added."""

    def set_two_factor(state: "TwoFactor") -> "Deferred[None]":  # type: ignore[empty-body]
        """Store (replace) a login's two-factor state."""

    def two_factor(account: str, login: str) -> "Deferred[TwoFactor | None]":  # type: ignore[empty-body]
        """The login's two-factor state, or None when two-factor was never set up."""

    def clear_two_factor(account: str, login: str) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Forget the login's two-factor state; fires with whether there was one."""

    def use_totp_step(account: str, login: str, step: int) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Atomically: if C{step} is newer than the last accepted step, record it and fire True;
        otherwise (a code already used, or an older one) False. False too without two-factor state."""

    def use_recovery_code(account: str, login: str, code_hash: str) -> "Deferred[bool]":  # type: ignore[empty-body]
        """Atomically remove one unused recovery code hash; fires with whether it was unused."""


class IStoreExport(Interface):
    """Reads, for a whole-store copy, the records no other method lists (L{jangotw.records}).

    Not part of L{IStore}: only a store that can be the source of
    C{jangomail-admin store migrate} declares it.
    """

    def export_records(kind: "type[Record]", after: str | None, limit: int) -> "Deferred[tuple[list[Record], str | None]]":  # type: ignore[empty-body]
        """One page: at most C{limit} records of C{kind} (one of L{jangotw.records.RECORD_KINDS}) in a
        stable order, after position C{after} (None: from the start). Fires with them and the position
        to pass for the next page, None once this page was the last."""


class IStoreImport(Interface):
    """Writes records exactly as exported (times, counts, spellings), for a whole-store copy.

    Not part of L{IStore}: only a store that can be the destination of
    C{jangomail-admin store migrate} declares it.
    """

    def import_records(records: "Sequence[CopiedRecord]") -> "Deferred[None]":  # type: ignore[empty-body]
        """Store every record with its own times, replacing what is stored under the same account and
        name (event records add to the counts). The accounts (and logins) a record names must exist:
        import accounts first."""


class IFailureStore(Interface):
    """Failed authentication attempts by key (a client IP, a user name), counted in one place for
    every node and worker, so guessing cannot be spread over them.

    A sliding window: a failure counts until C{at + window}. Keys are opaque
    text chosen by the caller (L{jangotw.auth.throttle.FailureThrottle}).
    """

    def count_failure(key: str, at: float, window: float) -> "Deferred[int]":  # type: ignore[empty-body]
        """Record one failure; fires with how many failures of C{key} still count (this one too)."""

    def recent_failures(key: str, at: float) -> "Deferred[int]":  # type: ignore[empty-body]
        """How many failures of C{key} still count at C{at}."""

    def clear_failures(key: str) -> "Deferred[None]":  # type: ignore[empty-body]
        """Forget C{key}'s failures (a success)."""


class ISpoolFile(Interface):
    """One message being received into the spool."""

    message_id = Attribute("The queue id this message will have.")
    size = Attribute("Bytes written so far.")

    def write(data: bytes) -> None:
        """Append message bytes (buffered write on the reactor thread)."""

    def commit(record: "SpoolRecord") -> "Deferred[SpoolRecord]":  # type: ignore[empty-body]
        """Flush, fsync, write the envelope, rename into incoming/ and fsync the directory.
        Fires once the message survives a crash; only then may the client get 250."""

    def abort() -> None:
        """Throw the partial message away."""


class ISpool(Interface):
    """The durable queue directory."""

    def open() -> ISpoolFile:  # type: ignore[empty-body]
        """Start a new message with a fresh queue id."""

    def recover() -> "Deferred[list[SpoolRecord]]":  # type: ignore[empty-body]
        """Every committed message, oldest first; removes partial files left by a crash."""

    def body_path(message_id: str) -> str:  # type: ignore[empty-body]
        """Filesystem path of a committed message's bytes."""


class IClientAddress(Interface):
    """Credentials: the connecting client's IP address, with an optional account hint."""

    address = Attribute("The client's IP address (ipaddress object).")
    username = Attribute("Account named by an X-SMTPUsername header, or None.")


class IFromAddress(Interface):
    """Credentials: a From address (envelope or header), with optional candidate restriction."""

    address = Attribute("The address, lower-cased domain.")
    username = Attribute("Account named by an X-SMTPUsername header, or None.")


class ISecretLogin(Interface):
    """Credentials: a user name with a password or API token, from a client address (SMTP AUTH)."""

    username = Attribute("As given: an account, login@account, or a directory user name.")
    secret = Attribute("The password or API token (jangotw.auth.credentials.Secret).")
    address = Attribute("The client's IP address (ipaddress object); login IP rules apply to it.")


class IDeliverer(Interface):
    """Hands a message to the next hop (the recipients' mail exchangers or a smarthost)."""

    def deliver(message: "OutboundMessage") -> "Deferred[list[RecipientResult]]":  # type: ignore[empty-body]
        """Attempt delivery to every recipient of C{message} (all of one destination domain,
        or anything when a smarthost is configured). Never fails: DNS, connection, TLS and
        protocol problems become per-recipient DEFERRED or FAILED results."""
