# -*- test-case-name: tests.integration.test_server -*-
"""The running server: thread pools, the store, the spool, and one service per listener.

Listeners start only once the store is open and the spool recovered, so no
client is ever answered by a half-started server. Each listener is a named
child service (C{smtp:tcp:2525}, C{smtps:tcp:465}, C{admin:tcp:8025:...}).
Stopping is graceful (listeners, then open sessions, then the queue); SIGHUP
(L{RelayService.reload}) applies what can change without a restart.
"""
from __future__ import annotations

import os
from typing import Any

from publicsuffixlist import PublicSuffixList
from twisted.application.service import MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.ssl import CertificateOptions
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .auth.checkers import ClientAddressChecker, FromAddressChecker, SecretLoginChecker
from .auth.credentials import Secret
from .auth.ldap import LDAPDirectory
from .auth.passwords import PasswordHasher
from .auth.principals import Authenticator
from .auth.realm import AccountRealm
from .auth.throttle import FailureThrottle
from .admin.api import AdminAPI
from .admin.api_audit import AuditLog
from .admin.api_auth import ApiCredentials
from .admin.api_session import SessionSigner
from .admin.health import Readiness
from .admin.routes import ROUTES
from .admin.services import build_admin
from .admin.web import admin_root, admin_site
from .config import Config, load_config
from .errors import ConfigError
from .ingress.drain import OpenSessions
from .ingress.factory import ConnectionLimiter, SMTPFactory
from .ingress.gate import Gate
from .ingress.session import SessionSettings, SMTPSession
from .ingress.tls import server_tls_options
from .initiation.desk import InitiationDesk
from .initiation.fanout import Campaigns
from .interfaces import ICredentialStore, IListStore, IStore
from .metrics import Metrics
from .model import SpoolRecord
from .outbound.client import SMTPDeliverer
from .outbound.mx import MailExchangers, make_resolver
from .outbound.pool import ConnectionPool as OutboundPool
from .pipeline.quota import Quota
from .pipeline.render import Renderer
from .pipeline.runner import Pipeline
from .pipeline.summary import Summaries
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
from .spool.layout import TMP
from .senders.dkimverify import DKIMVerifier
from .senders.dmarc import DMARCPolicies, Organisations
from .senders.dns import Lookups
from .senders.returnpath import ReturnPathDomains
from .senders.spf import SPFChecker
from .senders.verification import FromVerification
from .spool.adopt import adopt_orphans, spool_root
from .spool.writer import Spool
from .workers import Inherited, worker_count
from .reload import CurrentCertificate, merge
from .store.opening import open_store

__all__ = ["RelayService", "ListeningPort"]

log = Logger()


class ListeningPort(Service):
    """A port that is already listening; stopping the service closes it."""

    def __init__(self, port: IListeningPort) -> None:
        super().__init__()
        self.port = port

    def stopService(self) -> "Deferred[None] | None":
        if not self.running:  # closed first at shutdown; the parent's stopService comes again
            return None
        super().stopService()
        return self.port.stopListening()


class RelayService(MultiService):
    """Everything C{twistd jangomail} runs, built from one L{Config}."""

    def __init__(self, config: Config, reactor: Any, config_path: str = "", worker: Inherited | None = None) -> None:
        super().__init__()
        self.config = config
        self.worker = worker  # one of several worker processes (jangotw.workers); None: the only process
        self.config_path = config_path  # read again on SIGHUP (reload)
        self.reactor = reactor
        self.metrics = Metrics()
        self.sessions = OpenSessions(reactor)
        self.session_settings = _session_settings(config)  # replaced on reload; new sessions read it
        self.limiter = ConnectionLimiter(config.smtp.max_connections, config.smtp.max_connections_per_ip)
        self.cpu_pool = ThreadPool(minthreads=0, maxthreads=max(2, os.cpu_count() or 2), name="cpu")
        # Commits and removals are grouped into one pass each at a time (spool.writer): a few threads
        # suffice, and fewer threads contend less for the GIL.
        self.spool_pool = ThreadPool(minthreads=1, maxthreads=4, name="spool")
        self.ldap_pool = (ThreadPool(minthreads=0, maxthreads=config.ldap.pool_size, name="ldap")
                          if config.ldap.url else None)
        self.tls_options = (
            CurrentCertificate(server_tls_options(config.tls.certificate, config.tls.key))
            if config.tls.certificate else None
        )
        self.spool_dir = os.path.join(config.server.data_dir, "spool")
        self.spool = Spool(spool_root(self.spool_dir, worker_count(config), worker.index if worker else None),
                           reactor, reactor, self.spool_pool)
        self.store: IStore | None = None
        self.deliverer: SMTPDeliverer | None = None
        self.authenticator: Authenticator | None = None  # one for SMTP AUTH and the admin API: one throttle
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
        if self.worker is None:  # a worker's supervisor did this before starting it
            await deferToThreadPool(self.reactor, self.spool_pool, adopt_orphans, self.spool_dir, [self.spool.root])
        queued = await self.spool.recover()
        log.info("spool holds {count} message(s) awaiting delivery", count=len(queued))
        self.tracking_signer = TokenSigner(await self._secret("tracking.key"))
        self.queue = await self._start_queue(self.store, queued)
        queue = self.queue
        self.metrics.watch_queue(lambda: (state.record.received_at for state in queue.messages()), self.reactor)
        site = tracking_site(self.store, self.tracking_signer, self.reactor, metrics=self.metrics)
        for description in self.config.tracking.listen:
            await self._listen(f"tracking:{description}", description, site)
        gate = self._build_gate(self.store, await self._ldap_directory(), await self._sender_verification())
        limiter = self.limiter
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
        readiness = Readiness(self.store, self.spool.layout.directory(TMP), self.reactor, self.reactor,
                              self.spool_pool)
        admin = admin_site(admin_root(self.metrics, readiness, api_v1=await self._admin_api(self.store)),
                           self.reactor)
        for description in self.config.admin.listen:
            await self._listen(f"admin:{description}", description, admin)
        if self.worker is not None:
            log.info("worker {index} ready: {count} message(s) recovered from {spool}", index=self.worker.index,
                     count=len(queued), spool=self.spool.root)

    async def _admin_api(self, store: IStore) -> AdminAPI:
        """The JSON admin API: the service layers jangomail-admin uses, behind the shared authenticator."""
        assert self.authenticator is not None
        admin = await build_admin(self.reactor, self.config, store, cpu=self.cpu_pool, io=self.spool_pool)
        sessions = SessionSigner(await self._secret("api-session.key"), self.reactor)
        audit = AuditLog(os.path.join(self.config.server.data_dir, "audit.log"), self.reactor, self.reactor,
                         self.spool_pool)
        credentials = ApiCredentials(self.authenticator, sessions, store, ICredentialStore(store, None))
        return AdminAPI(ROUTES, admin, credentials, audit, self.config.admin.operators)

    def _failed(self, failure: Failure) -> None:
        log.failure("jangotw could not start", failure)
        self.ready.errback(failure)

    async def _listen(self, name: str, description: str, factory: IProtocolFactory) -> None:
        if self.worker is None:
            port = await serverFromString(self.reactor, description).listen(factory)
        elif name in self.worker.sockets:  # opened by the supervisor, shared with the other workers
            fd, family = self.worker.sockets[name]
            port = self.reactor.adoptStreamPort(fd, family, factory)
            os.close(fd)  # the port holds its own copy
        else:
            return  # not this worker's (the admin listener is worker 0's)
        log.info("listening on {name} at {address}", name=name, address=str(port.getHost()))
        listener = ListeningPort(port)
        listener.setName(name)
        listener.setServiceParent(self)

    def _smtp_factory(self, gate: Gate, limiter: ConnectionLimiter, implicit_tls: bool) -> SMTPFactory:
        spool, reactor, queue, metrics = self.spool, self.reactor, self.queue, self.metrics
        tls = None if implicit_tls else self.tls_options

        def build() -> SMTPSession:
            return SMTPSession(gate, spool, self.session_settings, reactor, tls, implicit_tls,
                               on_queued=queue.enqueue, metrics=metrics)

        return SMTPFactory(build, limiter, self.config.server.hostname, self.sessions, metrics)

    async def _start_queue(self, store: IStore, queued: list[SpoolRecord]) -> QueueManager:
        """The delivery side: outbound client, bounce mailbox, queue manager, admin requests."""
        config, reactor = self.config, self.reactor
        delivery, hostname = config.delivery, config.server.hostname
        signer = VerpSigner(await self._secret("verp.key"))
        resolver = make_resolver(delivery.dns_servers, reactor)
        self.deliverer = SMTPDeliverer(
            reactor=reactor,
            mail_exchangers=MailExchangers(resolver),
            helo_name=hostname,
            mx_port=delivery.mx_port,
            relay_host=delivery.relay_host,
            relay_auth=await self._relay_credentials(),
            require_verified_tls=frozenset(delivery.require_verified_tls),
            # As many idle sessions per server as attempts may run to it: a burst does not churn connections.
            pool=OutboundPool(reactor, max_idle=delivery.max_per_destination),
        )
        bounce_domain = delivery.bounce_domain.lower()
        return_domains = ReturnPathDomains(Lookups(resolver), bounce_domain, reactor)

        async def return_path(record: SpoolRecord, index: int) -> str:
            domain = await return_domains.for_sender(record.envelope.sender)
            return signer.return_path(record.message_id, index, domain)
        notices = Notices(self.spool, reactor, hostname)
        blocklist = await deferToThreadPool(reactor, self.spool_pool, read_blocklist, delivery.blocklist_file)
        summaries = Summaries(self.spool.body_path, reactor, self.spool_pool)  # read once for both
        pipeline = Pipeline(stages=(Suppression(store, blocklist), Quota(store, reactor)), accounts=store,
                            headers=summaries.headers)
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
            return_path=(lambda record, index: Deferred.fromCoroutine(return_path(record, index)))
            if bounce_domain else None,
            policy=RetryPolicy(delivery.retry_base, delivery.retry_max, delivery.max_queue_lifetime),
            max_active=delivery.max_active,
            max_per_destination=delivery.max_per_destination,
            hold=delivery.hold,
            prepare=pipeline.prepare,
            renderer=self._renderer(store, summaries),
            metrics=self.metrics,
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

    def _renderer(self, store: IStore, summaries: Summaries) -> Renderer:
        renderer = Renderer(
            store=store,
            signer=self.tracking_signer,
            base_url=self.config.tracking.base_url,
            bounce_domain=self.config.delivery.bounce_domain.lower(),
            directory=os.path.join(self.spool.root, "render"),
            summaries=summaries,
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

    async def _sender_verification(self) -> FromVerification | None:
        """SPF, DKIM and DMARC checks of mail authorised by its From address ([smtp] from_auth_verification)."""
        if self.config.smtp.from_auth_verification == "none":
            return None
        lookups = Lookups(make_resolver(self.config.delivery.dns_servers, self.reactor))
        organisations = Organisations(await deferToThreadPool(self.reactor, self.spool_pool, PublicSuffixList))
        return FromVerification(spf=SPFChecker(lookups), dkim=DKIMVerifier(lookups, self.reactor, self.cpu_pool),
                                policies=DMARCPolicies(lookups, organisations),
                                authserv_id=self.config.server.hostname,
                                scratch_directory=self.spool.layout.directory(TMP), clock=self.reactor)

    def _build_gate(self, store: IStore, directory: LDAPDirectory | None = None,
                    senders: FromVerification | None = None) -> Gate:
        hasher = PasswordHasher()

        def verify(password_hash: str, password: str) -> "Deferred[bool]":
            return deferToThreadPool(self.reactor, self.cpu_pool, hasher.verify, password_hash, password)

        def rehash(password_hash: str, password: str) -> "Deferred[str | None]":
            def compute() -> str | None:
                return hasher.hash(password) if hasher.needs_rehash(password_hash) else None
            return deferToThreadPool(self.reactor, self.cpu_pool, compute)

        credentials = store if ICredentialStore.providedBy(store) else None
        self.authenticator = Authenticator(
            accounts=store, credentials=credentials, verify=verify, rehash=rehash, directory=directory,
            throttle=FailureThrottle(store, self.reactor, self.config.smtp.auth_failures,  # type: ignore[arg-type]
                                     self.config.smtp.auth_failure_window),
            clock=self.reactor)
        portal = Portal(AccountRealm(store), [
            SecretLoginChecker(self.authenticator),
            ClientAddressChecker(store),
            FromAddressChecker(store),
        ])
        desk = None
        if IListStore.providedBy(store):
            desk = InitiationDesk(store, store, verify, FailureThrottle(
                store, self.reactor, self.config.smtp.auth_failures,  # type: ignore[arg-type]
                self.config.smtp.auth_failure_window, scope="initiation"), credentials)
        return Gate(
            portal=portal,
            initiation_desk=desk,
            accounts=store,
            authorisations=store,
            lists=store,
            initiation_domain=self.config.initiation.domain.lower(),
            bounce_domain=self.config.delivery.bounce_domain.lower(),
            local_domains=frozenset(domain.lower() for domain in self.config.smtp.local_domains),
            senders=senders,
        )

    def reload(self) -> "Deferred[None]":
        """SIGHUP: read the configuration file and the TLS certificate again; apply what
        L{jangotw.reload.merge} allows and log the rest. A file or certificate that does not
        load changes nothing. New sessions get the new limits; open ones keep theirs."""
        return Deferred.fromCoroutine(self._reload()).addErrback(
            lambda failure: log.failure("reload failed; running configuration kept", failure))

    async def _reload(self) -> None:
        try:
            loaded, certificate = await deferToThreadPool(self.reactor, self.spool_pool, self._read_for_reload)
        except ConfigError as error:
            log.error("reload refused, running configuration kept: {error}", error=str(error))
            return
        change = merge(self.config, loaded)
        self.config = change.config
        self.session_settings = _session_settings(change.config)
        self.limiter.max_total = change.config.smtp.max_connections
        self.limiter.max_per_address = change.config.smtp.max_connections_per_ip
        if certificate is not None and self.tls_options is not None:
            self.tls_options.replace(certificate)
        log.info("reloaded {path}: {applied}; TLS certificate {certificate}", path=self.config_path,
                 applied=", ".join(change.applied) or "no reloadable key changed",
                 certificate=f"re-read from {change.config.tls.certificate}" if certificate else "not in use")
        if change.needs_restart:
            log.warn("changed in {path} but applied only by a restart: {keys}", path=self.config_path,
                     keys=", ".join(change.needs_restart))

    def _read_for_reload(self) -> tuple[Config, CertificateOptions | None]:
        """The new configuration and, when TLS stays on, its certificate (blocking: a pool thread)."""
        loaded = load_config(self.config_path)
        if self.tls_options is None or not loaded.tls.certificate:
            return loaded, None
        return loaded, server_tls_options(loaded.tls.certificate, loaded.tls.key)

    def stopService(self) -> "Deferred[None]":
        """Graceful: close every listener, give open SMTP sessions C{[server] shutdown_grace}
        seconds to finish their transaction, stop the queue (attempts in flight journal their
        outcome), then close the store and stop the thread pools."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        listeners = [service for service in self if isinstance(service, ListeningPort)]
        log.info("stopping: closing {count} listener(s)", count=len(listeners))
        await gatherResults([maybeDeferred(listener.stopService) for listener in listeners], consumeErrors=True)
        await self.sessions.drain(self.config.server.shutdown_grace)
        await super().stopService()
        if self.deliverer is not None:
            await self.deliverer.close()
        if self.store is not None:
            await self.store.close()
        for pool in self._pools():
            pool.stop()


def _session_settings(config: Config) -> SessionSettings:
    smtp = config.smtp
    return SessionSettings(
        hostname=config.server.hostname,
        max_message_size=smtp.max_message_size,
        max_recipients=smtp.max_recipients,
        max_errors=smtp.max_errors,
        idle_timeout=smtp.idle_timeout,
        max_header_size=smtp.max_header_size,
        normalise_bare_newlines=smtp.bare_newline == "normalise",
        auth_requires_tls=smtp.auth_requires_tls,
    )


def _first_line(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")
