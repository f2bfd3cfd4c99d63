# -*- test-case-name: tests.integration.test_server -*-
"""The running server: thread pools, the store, the spool, and one service per listener.

Listeners start only once the store is open and the spool recovered, so no
client is ever answered by a half-started server. Each listener is a named
child service (C{smtp:tcp:2525}, C{smtps:tcp:465}).
"""
from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .auth.checkers import ClientAddressChecker, FromAddressChecker, LocalThenDirectoryChecker, PasswordChecker
from .auth.credentials import Secret
from .auth.ldap import LDAPDirectory
from .auth.passwords import PasswordHasher
from .auth.realm import AccountRealm
from .auth.throttle import FailureThrottle
from .config import Config
from .errors import ConfigError
from .ingress.factory import ConnectionLimiter, SMTPFactory
from .ingress.gate import Gate
from .ingress.session import SessionSettings, SMTPSession
from .ingress.tls import server_tls_options
from .initiation.desk import InitiationDesk
from .initiation.fanout import Campaigns
from .interfaces import IListStore, IStore
from .model import SpoolRecord
from .outbound.client import SMTPDeliverer
from .outbound.mx import MailExchangers, make_resolver
from .outbound.pool import ConnectionPool as OutboundPool
from .pipeline.quota import Quota
from .pipeline.render import Renderer
from .pipeline.runner import Pipeline
from .pipeline.suppression import Suppression, read_blocklist
from .queue.control import ControlRequests
from .queue.local import BounceMailbox
from .queue.manager import QueueManager
from .queue.notices import Notices
from .queue.poller import ControlPoller
from .queue.routing import Router
from .queue.state import RetryPolicy
from .queue.verp import VerpSigner, load_or_create_secret
from .spool.journal import DeliveryJournal
from .tracking.links import TokenSigner
from .tracking.resource import tracking_site
from .spool.writer import Spool
from .store.opening import open_store

__all__ = ["RelayService", "ListeningPort"]

log = Logger()


class ListeningPort(Service):
    """A port that is already listening; stopping the service closes it."""

    def __init__(self, port: IListeningPort) -> None:
        super().__init__()
        self.port = port

    def stopService(self) -> "Deferred[None] | None":
        super().stopService()
        return self.port.stopListening()


class RelayService(MultiService):
    """Everything C{twistd jangomail} runs, built from one L{Config}."""

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.cpu_pool = ThreadPool(minthreads=0, maxthreads=max(2, os.cpu_count() or 2), name="cpu")
        self.spool_pool = ThreadPool(minthreads=1, maxthreads=16, name="spool")  # fsync waits on the disk, not the CPU
        self.ldap_pool = (ThreadPool(minthreads=0, maxthreads=config.ldap.pool_size, name="ldap")
                          if config.ldap.url else None)
        self.tls_options = (
            server_tls_options(config.tls.certificate, config.tls.key) if config.tls.certificate else None
        )
        self.spool = Spool(os.path.join(config.server.data_dir, "spool"), reactor, reactor, self.spool_pool)
        self.store: IStore | None = None
        self.deliverer: SMTPDeliverer | None = None
        self.ready: Deferred[None] = Deferred()  # fires once every listener listens

    def _pools(self) -> list[ThreadPool]:
        return [pool for pool in (self.cpu_pool, self.spool_pool, self.ldap_pool) if pool is not None]

    def listening(self, name: str) -> IListeningPort:
        """The port of the listener called C{name} (e.g. C{smtp:tcp:0}), for tests and tools."""
        return self.getServiceNamed(name).port  # type: ignore[no-any-return]

    def startService(self) -> None:
        super().startService()
        for pool in self._pools():
            pool.start()
        self.spool.prepare()
        Deferred.fromCoroutine(self._start()).addCallbacks(self.ready.callback, self._failed)

    async def _start(self) -> None:
        self.store = await open_store(self.reactor, self.config)
        queued = await self.spool.recover()
        log.info("spool holds {count} message(s) awaiting delivery", count=len(queued))
        self.tracking_signer = TokenSigner(await self._secret("tracking.key"))
        self.queue = await self._start_queue(self.store, queued)
        site = tracking_site(self.store, self.tracking_signer, self.reactor)
        for description in self.config.tracking.listen:
            await self._listen(f"tracking:{description}", description, site)
        gate = self._build_gate(self.store, await self._ldap_directory())
        limiter = ConnectionLimiter(self.config.smtp.max_connections, self.config.smtp.max_connections_per_ip)
        for description in self.config.smtp.listen:
            factory = self._smtp_factory(gate, limiter, implicit_tls=False)
            await self._listen(f"smtp:{description}", description, factory)
        for description in self.config.initiation.listen:  # the initiation mailbox's own listeners
            await self._listen(f"initiation:{description}", description,
                               self._smtp_factory(gate, limiter, implicit_tls=False))
        for description in self.config.smtp.tls_listen:
            factory = self._smtp_factory(gate, limiter, implicit_tls=True)
            await self._listen(f"smtps:{description}", description,
                               TLSMemoryBIOFactory(self.tls_options, False, factory))

    def _failed(self, failure: Failure) -> None:
        log.failure("jangotw could not start", failure)
        self.ready.errback(failure)

    async def _listen(self, name: str, description: str, factory: IProtocolFactory) -> None:
        port = await serverFromString(self.reactor, description).listen(factory)
        log.info("listening on {name} at {address}", name=name, address=str(port.getHost()))
        listener = ListeningPort(port)
        listener.setName(name)
        listener.setServiceParent(self)

    def _smtp_factory(self, gate: Gate, limiter: ConnectionLimiter, implicit_tls: bool) -> SMTPFactory:
        smtp = self.config.smtp
        settings = SessionSettings(
            hostname=self.config.server.hostname,
            max_message_size=smtp.max_message_size,
            max_recipients=smtp.max_recipients,
            max_errors=smtp.max_errors,
            idle_timeout=smtp.idle_timeout,
            max_header_size=smtp.max_header_size,
            normalise_bare_newlines=smtp.bare_newline == "normalise",
            auth_requires_tls=smtp.auth_requires_tls,
        )
        spool, reactor, queue = self.spool, self.reactor, self.queue
        tls = None if implicit_tls else self.tls_options

        def build() -> SMTPSession:
            return SMTPSession(gate, spool, settings, reactor, tls, implicit_tls, on_queued=queue.enqueue)

        return SMTPFactory(build, limiter, self.config.server.hostname)

    async def _start_queue(self, store: IStore, queued: list[SpoolRecord]) -> QueueManager:
        """The delivery side: outbound client, bounce mailbox, queue manager, admin requests."""
        config, reactor = self.config, self.reactor
        delivery, hostname = config.delivery, config.server.hostname
        signer = VerpSigner(await self._secret("verp.key"))
        self.deliverer = SMTPDeliverer(
            reactor=reactor,
            mail_exchangers=MailExchangers(make_resolver(delivery.dns_servers, reactor)),
            helo_name=hostname,
            mx_port=delivery.mx_port,
            relay_host=delivery.relay_host,
            relay_auth=await self._relay_credentials(),
            require_verified_tls=frozenset(delivery.require_verified_tls),
            pool=OutboundPool(reactor),
        )
        bounce_domain = delivery.bounce_domain.lower()
        notices = Notices(self.spool, reactor, hostname)
        blocklist = await deferToThreadPool(reactor, self.spool_pool, read_blocklist, delivery.blocklist_file)
        pipeline = Pipeline(stages=(Suppression(store, blocklist), Quota(store, reactor)), accounts=store,
                            read_headers=notices.header_block)
        queue = QueueManager(
            clock=reactor,
            spool=self.spool,
            journal=DeliveryJournal(self.spool.layout, reactor, self.spool_pool),
            deliverer=self.deliverer,
            store=store,
            notices=notices,
            router=Router(bounce_domain=bounce_domain, initiation_domain=config.initiation.domain.lower(),
                          held_domains=frozenset(d.lower() for d in config.smtp.local_domains),
                          smarthost=bool(delivery.relay_host)),
            deliver_locally=BounceMailbox(self.spool, store, signer, reactor,
                                          self.tracking_signer.parse_unsubscribe).deliver,
            return_path=(lambda record, index: signer.return_path(record.message_id, index, bounce_domain))
            if bounce_domain else None,
            policy=RetryPolicy(delivery.retry_base, delivery.retry_max, delivery.max_queue_lifetime),
            max_active=delivery.max_active,
            max_per_destination=delivery.max_per_destination,
            hold=delivery.hold,
            prepare=pipeline.prepare,
            renderer=self._renderer(store, notices),
        )
        if IListStore.providedBy(store):
            queue.initiate = Campaigns(store, store, self.spool, reactor, queue.enqueue, notices.queue_notice,
                                       os.path.join(self.spool.root, "campaigns")).start
        queue.setName("queue")
        queue.setServiceParent(self)
        await queue.recover(queued)
        poller = ControlPoller(reactor, reactor, self.spool_pool,
                               ControlRequests(os.path.join(self.spool.root, "control")), queue)
        poller.setName("queue-control")
        poller.setServiceParent(self)
        return queue

    def _renderer(self, store: IStore, notices: Notices) -> Renderer:
        renderer = Renderer(
            store=store,
            signer=self.tracking_signer,
            base_url=self.config.tracking.base_url,
            bounce_domain=self.config.delivery.bounce_domain.lower(),
            directory=os.path.join(self.spool.root, "render"),
            read_headers=notices.header_block,
            spool_body=self.spool.body_path,
            reactor=self.reactor,
            clock=self.reactor,
            cpu_pool=self.cpu_pool,
        )
        renderer.prepare_directory()
        return renderer

    def _secret(self, name: str) -> "Deferred[bytes]":
        """A 32-byte key under data_dir/secrets/, created on first start (mode 0600)."""
        return deferToThreadPool(self.reactor, self.spool_pool, load_or_create_secret,
                                 os.path.join(self.config.server.data_dir, "secrets", name))

    async def _relay_credentials(self) -> tuple[str, str] | None:
        delivery = self.config.delivery
        if not delivery.relay_user:
            return None

        try:
            password = await deferToThreadPool(self.reactor, self.spool_pool, _first_line,
                                               delivery.relay_password_file)
        except OSError as error:
            raise ConfigError(f"delivery.relay_password_file: cannot read {error.filename}: {error.strerror}") from None
        return delivery.relay_user, password

    async def _ldap_directory(self) -> LDAPDirectory | None:
        """The LDAP directory of C{[ldap]}, its service password read once at start-up."""
        ldap = self.config.ldap
        if self.ldap_pool is None:
            return None
        if not ldap.start_tls and not ldap.url.startswith("ldaps://"):
            log.warn("ldap: {url} without TLS: directory passwords cross the network in clear", url=ldap.url)
        password = Secret("")
        if ldap.bind_password_file:
            try:
                password = Secret(await deferToThreadPool(self.reactor, self.ldap_pool, _first_line,
                                                          ldap.bind_password_file))
            except OSError as error:
                raise ConfigError(f"ldap.bind_password_file: cannot read {error.filename}: {error.strerror}") from None
            if not password.reveal():
                raise ConfigError("ldap.bind_password_file: the first line is empty (an empty password binds anonymously)")
        return LDAPDirectory(
            url=ldap.url,
            user_base=ldap.user_base,
            group_base=ldap.group_base,
            group_map=ldap.mappings,
            reactor=self.reactor,
            threadpool=self.ldap_pool,
            bind_dn=ldap.bind_dn,
            bind_password=password,
            start_tls=ldap.start_tls,
            user_filter=ldap.user_filter,
            group_filter=ldap.group_filter,
            timeout=ldap.timeout,
            ca_certificate=ldap.ca_certificate,
        )

    def _build_gate(self, store: IStore, directory: LDAPDirectory | None = None) -> Gate:
        hasher = PasswordHasher()

        def verify(password_hash: str, password: str) -> "Deferred[bool]":
            return deferToThreadPool(self.reactor, self.cpu_pool, hasher.verify, password_hash, password)

        def rehash(password_hash: str, password: str) -> "Deferred[str | None]":
            def compute() -> str | None:
                return hasher.hash(password) if hasher.needs_rehash(password_hash) else None
            return deferToThreadPool(self.reactor, self.cpu_pool, compute)

        local = PasswordChecker(store, verify, rehash)
        portal = Portal(AccountRealm(store), [
            local if directory is None else LocalThenDirectoryChecker(local, store, directory),
            ClientAddressChecker(store),
            FromAddressChecker(store),
        ])
        throttle = FailureThrottle(self.reactor, self.config.smtp.auth_failures,
                                   self.config.smtp.auth_failure_window)
        desk = None
        if IListStore.providedBy(store):
            desk = InitiationDesk(store, store, verify, FailureThrottle(
                self.reactor, self.config.smtp.auth_failures, self.config.smtp.auth_failure_window))
        return Gate(
            portal=portal,
            initiation_desk=desk,
            accounts=store,
            authorisations=store,
            lists=store,
            throttle=throttle,
            initiation_domain=self.config.initiation.domain.lower(),
            bounce_domain=self.config.delivery.bounce_domain.lower(),
            local_domains=frozenset(domain.lower() for domain in self.config.smtp.local_domains),
        )

    def stopService(self) -> "Deferred[None]":
        stopped = super().stopService()

        async def release(_: object) -> None:
            if self.deliverer is not None:
                await self.deliverer.close()
            if self.store is not None:
                await self.store.close()
            for pool in self._pools():
                pool.stop()

        return stopped.addCallback(lambda ignored: Deferred.fromCoroutine(release(ignored)))


def _first_line(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")
