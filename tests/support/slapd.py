"""A throwaway OpenLDAP server (the real C{slapd}) on loopback, for LDAP login tests.

    slapd = await start_slapd(self)                 # stopped by the test's cleanup
    slapd.url                                       # ldap://127.0.0.1:PORT
    ALICE.uid, ALICE.dn, ALICE.password             # the users below
    await slapd.stop(); await slapd.start()         # the directory goes away mid-test, and comes back

Each call writes a C{slapd.conf} (mdb database under the test's temp dir,
suffix C{dc=example,dc=test}, root password hashed by C{slappasswd -s}), loads
the users and groups with C{slapadd} and runs C{slapd -d 0} in the foreground
as a child process on a free port. Readiness is an anonymous base search by
C{ldapsearch}, repeated as each attempt's process ends (no sleeping). A
missing binary fails the test: C{scripts/test} installs slapd and ldap-utils.

The directory: C{ou=people} is readable only by bound users (so the service
account really is needed), passwords only usable for binding, and
C{allow bind_anon_dn} makes slapd accept an unauthenticated bind (a DN with an
empty password) as anonymous, the trap a client must avoid. C{tls=True} adds
an C{ldaps://} listener and StartTLS with a self-signed certificate for
127.0.0.1 (C{slapd.certificate_path}).
"""
from __future__ import annotations

import os
import shutil
import socket
from typing import Any

from attrs import define, frozen
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from jangotw.admin.certificate import write_self_signed

__all__ = [
    "Slapd", "User", "start_slapd", "binary", "SUFFIX", "SERVICE_DN", "SERVICE_PASSWORD", "PEOPLE", "GROUPS",
    "RELAY_GROUP", "API_GROUP", "STAFF_GROUP", "ALICE", "BOB", "CAROL", "DAVE", "STAR", "USERS",
]

SUFFIX = "dc=example,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
SERVICE_DN = f"cn=relay-service,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service account passphrase"
RELAY_GROUP = f"cn=mail-relay,{GROUPS}"
API_GROUP = f"cn=mail-api,{GROUPS}"
STAFF_GROUP = f"cn=staff,{GROUPS}"  # in no group_map


@frozen
class User:
    uid: str
    dn: str
    password: str
    groups: tuple[str, ...]


ALICE = User("alice", f"uid=alice,{PEOPLE}", "alice's own passphrase", (RELAY_GROUP,))
BOB = User("bob", f"uid=bob,{PEOPLE}", "bob's own passphrase", (API_GROUP,))
CAROL = User("carol", f"uid=carol,{PEOPLE}", "carol's own passphrase", (STAFF_GROUP,))
DAVE = User("dave", f"uid=dave,{PEOPLE}", "dave's own passphrase", (API_GROUP, RELAY_GROUP))
# A real user whose uid is a filter injection: only an escaped search finds exactly them.
STAR = User("star*)(uid=*", f"cn=Star User,{PEOPLE}", "star's own passphrase", (RELAY_GROUP,))
USERS = (ALICE, BOB, CAROL, DAVE, STAR)

_SCHEMAS = ("core", "cosine", "inetorgperson")


def binary(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        raise AssertionError(f"{name} not found: install slapd and ldap-utils (scripts/test does)")
    return path


def _free_port() -> int:
    """A loopback port nobody listens on now (slapd cannot report a port 0 it was given)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _SlapdProcess(ProcessProtocol):
    """Appends slapd's output to its log file and fires C{ended} with the exit status."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        with open(self.log_path, "ab") as handle:
            handle.write(data)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value: Any = reason.value
        self.ended.callback(value.exitCode if value.exitCode is not None else -(value.signal or 0))


@define(eq=False)
class Slapd:
    """One configured directory; C{start}/C{stop} run and end its slapd process on the same port."""

    directory: str
    port: int
    tls_port: int | None
    root_password: str
    certificate_path: str = ""
    _process: _SlapdProcess | None = None
    _transport: Any = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        assert self.tls_port is not None, "start_slapd(..., tls=True) for ldaps://"
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, "slapd.conf")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "slapd.log")

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.ended.called

    async def start(self) -> None:
        """Run slapd and wait until it answers an anonymous search."""
        assert not self.running, "slapd is already running"
        urls = [self.url] + ([self.ldaps_url] if self.tls_port is not None else [])
        self._process = _SlapdProcess(self.log_path)
        slapd = binary("slapd")
        self._transport = reactor.spawnProcess(
            self._process, slapd, [slapd, "-d", "0", "-f", self.config_path, "-h", " ".join(f"{u}/" for u in urls)],
            env={"PATH": os.environ.get("PATH", "")})
        await self._answering()

    async def _answering(self, attempts: int = 1000) -> None:
        ldapsearch = binary("ldapsearch")
        assert self._process is not None
        for _ in range(attempts):
            _, _, code = await getProcessOutputAndValue(
                ldapsearch, ["-x", "-H", self.url, "-b", SUFFIX, "-s", "base", "-LLL", "dn"],
                env={"LDAPNOINIT": "1"})
            if code == 0:
                return
            if self._process.ended.called:
                raise AssertionError(f"slapd exited while starting; see {self.log_path}:\n{self._log_tail()}")
        raise AssertionError(f"slapd did not answer after {attempts} searches; see {self.log_path}")

    def stop(self) -> "Deferred[object]":
        """End slapd (SIGTERM) unless it has ended already; fires once it has exited."""
        if not self.running:
            return succeed(None)
        assert self._process is not None
        try:
            self._transport.signalProcess("TERM")
        except ProcessExitedAlready:
            pass
        return self._process.ended  # type: ignore[return-value]

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-2000:]
        except OSError:
            return ""


async def start_slapd(testcase: TestCase, tls: bool = False) -> Slapd:
    """Configure, load and start a directory for C{testcase}; it is stopped at cleanup."""
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(os.path.join(directory, "db"))
    root_password = "root passphrase"
    secrets = [root_password, SERVICE_PASSWORD, *(user.password for user in USERS)]
    hashes = await gatherResults([Deferred.fromCoroutine(_hash(secret)) for secret in secrets], consumeErrors=True)
    hashed = dict(zip(secrets, hashes))
    slapd = Slapd(directory, _free_port(), _free_port() if tls else None, root_password)
    tls_lines = ""
    if tls:
        slapd.certificate_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        write_self_signed(slapd.certificate_path, key_path, hostname="localhost")  # and 127.0.0.1
        tls_lines = f"TLSCertificateFile {slapd.certificate_path}\nTLSCertificateKeyFile {key_path}\n"
    with open(slapd.config_path, "w") as handle:
        handle.write(_CONFIG.format(
            includes="".join(f"include /etc/ldap/schema/{name}.schema\n" for name in _SCHEMAS),
            directory=directory, tls=tls_lines, suffix=SUFFIX, root_dn=ROOT_DN,
            root_password=hashed[root_password], people=PEOPLE, groups=GROUPS))
    ldif_path = os.path.join(directory, "data.ldif")
    with open(ldif_path, "w") as handle:
        handle.write(_ldif(hashed))
    slapadd = binary("slapadd")
    out, err, code = await getProcessOutputAndValue(slapadd, ["-f", slapd.config_path, "-l", ldif_path],
                                                    env={"PATH": os.environ.get("PATH", "")})
    if code != 0:
        raise AssertionError(f"slapadd failed ({code}): {out!r} {err!r}")
    testcase.addCleanup(slapd.stop)
    await slapd.start()
    return slapd


async def _hash(secret: str) -> str:
    out, err, code = await getProcessOutputAndValue(binary("slappasswd"), ["-s", secret])
    if code != 0:
        raise AssertionError(f"slappasswd failed ({code}): {err!r}")
    return out.decode("ascii").strip()


_CONFIG = """\
{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
allow bind_anon_dn
{tls}
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_password}
directory {directory}/db

access to attrs=userPassword
    by anonymous auth
    by * none
access to dn.subtree="{people}"
    by users read
    by * none
access to dn.subtree="{groups}"
    by users read
    by * none
access to *
    by * read
"""


def _ldif(hashed: dict[str, str]) -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: relay-service\nuserPassword: {hashed[SERVICE_PASSWORD]}\n",
    ]
    for user in USERS:
        cn = user.dn.partition(",")[0].partition("=")[2] if user.dn.startswith("cn=") else user.uid
        entries.append(f"dn: {user.dn}\nobjectClass: inetOrgPerson\nuid: {user.uid}\ncn: {cn}\nsn: {cn}\n"
                       f"userPassword: {hashed[user.password]}\n")
    for group in (RELAY_GROUP, API_GROUP, STAFF_GROUP):
        members = "".join(f"member: {user.dn}\n" for user in USERS if group in user.groups)
        name = group.partition(",")[0].partition("=")[2]
        entries.append(f"dn: {group}\nobjectClass: groupOfNames\ncn: {name}\n{members}")
    return "\n".join(entries)
