# -*- test-case-name: tests.admin.test_api -*-
"""The administration service layers, built in one place for jangomail-admin and the admin API.

Both front ends only parse requests and format answers; every rule lives in
the layers assembled here, so the command line and the JSON API cannot drift
apart. Blocking work goes to the thread pools given: C{cpu} for password
hashing, strength checks and key generation, C{io} for reading the spool and
filing queue requests (the command line passes the reactor's pool for both).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from attrs import frozen
from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..auth.passwords import PasswordHasher, check_strength
from ..config import Config
from ..interfaces import ICredentialStore, IListStore, IStore
from ..outbound.mx import make_resolver
from ..pipeline.dkim import new_rsa_key
from ..queue.control import ControlRequests
from ..queue.state import RetryPolicy
from ..senders.dmarc import DMARCPolicies, Organisations
from ..senders.dns import Lookups
from ..senders.spf import SPFChecker
from ..spool.journal import DeliveryJournal
from ..spool.adopt import spool_root
from ..spool.layout import Layout
from ..workers import worker_count
from .accounts import AccountAdmin
from .campaigns import CampaignAdmin
from .domaincheck import DomainChecker
from .domainrecords import SenderSettings
from .domains import DomainAdmin
from .lists import ListAdmin, login_password_check
from .loginips import LoginIPAdmin
from .logins import LoginAdmin
from .queue import QueueAdmin, SpoolQueue
from .reports import ReportAdmin
from .suppressions import SuppressionAdmin
from .tokens import TokenAdmin
from .twofactor import TwoFactorAdmin
from .usage import UsageAdmin

__all__ = ["Admin", "build_admin"]


@frozen
class Admin:
    """The service layers a command or an API route may call."""

    accounts: AccountAdmin
    queue: QueueAdmin
    suppressions: SuppressionAdmin
    reports: ReportAdmin
    campaigns: CampaignAdmin
    domains: DomainAdmin
    usage: UsageAdmin
    lists: ListAdmin | None  # None: the configured store keeps no contact lists
    # None: the configured store keeps no logins, tokens, two-factor state or login IP rules
    logins: LoginAdmin | None
    tokens: TokenAdmin | None
    two_factor: TwoFactorAdmin | None
    login_ips: LoginIPAdmin | None


async def build_admin(reactor: Any, config: Config, store: IStore, cpu: ThreadPool, io: ThreadPool) -> Admin:
    """Every service layer over C{store}, configured from C{config}.

    @param reactor: provides C{IReactorTime} and C{IReactorFromThreads}, and resolves DNS for domain checks.
    """
    hasher = PasswordHasher()

    def in_cpu(function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        return deferToThreadPool(reactor, cpu, function, *args)

    def in_io(function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        return deferToThreadPool(reactor, io, function, *args)

    def hash_password(text: str) -> "Deferred[str]":
        return in_cpu(hasher.hash, text)

    def strength(text: str, inputs: Sequence[str]) -> "Deferred[None]":
        return in_cpu(check_strength, text, inputs)

    spool_dir = os.path.join(config.server.data_dir, "spool")
    workers = worker_count(config)
    roots = [spool_root(spool_dir, workers, index) for index in range(workers)] if workers > 1 else [spool_dir]
    delivery = config.delivery
    list_store = IListStore(store, None)
    credentials = ICredentialStore(store, None)
    organisations = Organisations(await in_io(PublicSuffixList))  # reads the suffix list file
    lookups = Lookups(make_resolver(delivery.dns_servers, reactor))
    sender_settings = SenderSettings.from_config(delivery.spf_include, delivery.sending_addresses,
                                                 config.tracking.base_url, delivery.bounce_domain)
    return Admin(
        accounts=AccountAdmin(store=store, hash_password=hash_password, check_password=strength),
        queue=QueueAdmin(
            spools=tuple(SpoolQueue(DeliveryJournal(Layout(root), reactor, io),
                                    ControlRequests(os.path.join(root, "control"))) for root in roots),
            store=store,
            policy=RetryPolicy(delivery.retry_base, delivery.retry_max, delivery.max_queue_lifetime),
            blocking=in_io,
        ),
        suppressions=SuppressionAdmin(store),
        reports=ReportAdmin(store),
        campaigns=CampaignAdmin(IListStore(store)),
        domains=DomainAdmin(
            store=store, make_key=lambda: in_cpu(new_rsa_key), clock=reactor, organisations=organisations,
            settings=sender_settings,
            checker=DomainChecker(lookups, SPFChecker(lookups), DMARCPolicies(lookups, organisations),
                                  sender_settings)),
        usage=UsageAdmin(store, reactor),
        lists=None if list_store is None else ListAdmin(
            store=list_store, hash_password=hash_password, check_password=strength,
            same_as_login=login_password_check(store, lambda hashed, text: in_cpu(hasher.verify, hashed, text))),
        logins=None if credentials is None else LoginAdmin(
            accounts=store, credentials=credentials, hash_password=hash_password, check_password=strength,
            clock=reactor),
        tokens=None if credentials is None else TokenAdmin(accounts=store, credentials=credentials, clock=reactor),
        two_factor=None if credentials is None else TwoFactorAdmin(accounts=store, credentials=credentials,
                                                                   clock=reactor),
        login_ips=None if credentials is None else LoginIPAdmin(accounts=store, credentials=credentials,
                                                                clock=reactor),
    )
