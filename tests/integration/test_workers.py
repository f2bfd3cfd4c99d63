"""[server] workers = 2: one port served by two worker processes, each with its own spool,
supervised by the twistd process (restart after a crash, graceful stop on SIGTERM)."""
from __future__ import annotations

import os
import re
import signal
import smtplib

from twisted.internet import reactor
from twisted.internet.task import deferLater

from jangotw.spool.layout import ENVELOPE, INCOMING

from .server import ProcessTestCase, TwistdProcess

_STARTED = re.compile(r"worker (\d+) started as pid (\d+)")
_POLLS = 200  # spool listings before a test gives up waiting for a message to appear


class WorkersTests(ProcessTestCase):
    async def start_workers(self) -> TwistdProcess:
        process = await self.start_twistd(server={"workers": 2})  # mail is held in the spools
        for index in (0, 1):
            await process.logged(f"worker {index} ready")
        return process

    def spooled(self, index: int) -> set[str]:
        """Queue ids in worker C{index}'s spool."""
        directory = os.path.join(self.data_dir, "spool", f"w{index}", INCOMING)
        return {name[:-len(ENVELOPE)] for name in os.listdir(directory) if name.endswith(ENVELOPE)}

    def send(self, count: int) -> list[str]:
        """C{count} messages, each on a new connection to the one SMTP port; their queue ids."""
        ids = []
        for number in range(count):
            with self.smtp() as client:
                client.ehlo("client.test")
                client.mail("news@shop.test")
                client.rcpt(f"r{number}@remote.test")
                code, reply = client.data(f"Subject: {number}\r\n\r\nbody\r\n".encode())
                assert code == 250, reply
                ids.append(reply.decode().rsplit(" ", 1)[-1])
        return ids

    def pids(self, process: TwistdProcess) -> dict[int, int]:
        """The latest pid of each worker, from the supervisor's log."""
        return {int(index): int(pid) for index, pid in _STARTED.findall(process.output)}

    async def test_one_port_two_workers_own_spools(self) -> None:
        """Connections to one port are accepted by both workers; each message is in exactly one
        worker's spool (w0 or w1), none in the single-process spool."""
        await self.start_workers()
        ids = await self.in_thread(self.send, 40)
        first, second = self.spooled(0), self.spooled(1)
        self.assertEqual(first | second, set(ids))
        self.assertEqual(first & second, set())
        self.assertTrue(first and second, f"worker 0 took {len(first)}, worker 1 {len(second)}")
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "spool", INCOMING)))

    async def test_killed_worker_restarted_with_its_spool(self) -> None:
        """SIGKILL to worker 1: the supervisor starts it again, it recovers the messages in its
        spool, and the port keeps accepting mail meanwhile."""
        process = await self.start_workers()
        for _ in range(_POLLS):
            if self.spooled(1):
                break
            await self.in_thread(self.send, 5)
        held = self.spooled(1)
        self.assertTrue(held)
        old = self.pids(process)[1]
        os.kill(old, signal.SIGKILL)
        await process.logged("worker 1 exited unasked (signal 9)")
        await process.logged(f"worker 1 ready: {len(held)} message(s) recovered")
        self.assertNotEqual(self.pids(process)[1], old)
        self.assertEqual(len(await self.in_thread(self.send, 4)), 4)
        self.assertGreaterEqual(self.spooled(1), held)

    async def test_sigterm_stops_every_worker_and_exits_zero(self) -> None:
        """SIGTERM to the supervisor: both workers stop gracefully and it exits with status 0."""
        process = await self.start_workers()
        workers = self.pids(process)
        self.assertEqual(await process.kill("TERM"), 0)
        for pid in workers.values():
            self.assertFalse(_alive(pid), f"worker pid {pid} still running")
        with self.assertRaises(OSError):
            await self.in_thread(smtplib.SMTP, "127.0.0.1", self.smtp_port, "client.test", 5)

    async def test_killed_supervisor_takes_its_workers(self) -> None:
        """SIGKILL to the supervisor: the kernel kills its workers too (none is left to race a
        restarted server for its spool)."""
        process = await self.start_workers()
        workers = self.pids(process)
        await process.kill("KILL")
        for _ in range(_POLLS):
            if not any(_alive(pid) for pid in workers.values()):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(any(_alive(pid) for pid in workers.values()))


def _alive(pid: int) -> bool:
    """Whether C{pid} is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

