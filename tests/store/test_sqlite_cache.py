"""The SQLite store's short read cache: accounts, client addresses and domain keys are reused for
a moment, writes through the store are seen at once, other processes' writes within the TTL."""
from __future__ import annotations

from ipaddress import ip_address, ip_network

import attrs
from twisted.internet.defer import DeferredList
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from jangotw.errors import InputError
from jangotw.model import SEND_EVENT, TrackingEvent
from jangotw.store.sqlite import SQLiteStore
from jangotw.store.sqlite_batch import READ_CACHE_SECONDS

from .test_sqlite import SQLiteFileMixin


class ReadCacheTests(SQLiteFileMixin, TestCase):
    async def two_processes(self) -> tuple[SQLiteStore, SQLiteStore, Clock]:
        """Two stores on one file with separate caches, as the server and jangomail-admin (or two
        workers) are; the first runs on a fake clock."""
        clock = Clock()
        server = attrs.evolve(await self.open(), clock=clock)
        admin = await self.open()
        await admin.add_account("shop", None)
        await admin.add_ip("shop", ip_network("192.0.2.0/24"))
        return server, admin, clock

    async def test_other_process_changes_seen_after_the_ttl(self) -> None:
        """An account disabled by another process is still answered from the cache until
        READ_CACHE_SECONDS have passed, then read again."""
        server, admin, clock = await self.two_processes()
        self.assertFalse((await server.get_account("shop")).disabled)  # type: ignore[union-attr]
        await admin.set_disabled("shop", True)
        clock.advance(READ_CACHE_SECONDS - 0.1)
        self.assertFalse((await server.get_account("shop")).disabled)  # type: ignore[union-attr]
        clock.advance(0.2)
        self.assertTrue((await server.get_account("shop")).disabled)  # type: ignore[union-attr]

    async def test_own_writes_seen_at_once(self) -> None:
        """A write through the store itself empties its cache: no stale answer even within the TTL."""
        server, _, _ = await self.two_processes()
        [(account, prefix)] = await server.accounts_for_ip(ip_address("192.0.2.7"))
        self.assertEqual((account.name, prefix), ("shop", 120))
        await server.remove_ip("shop", ip_network("192.0.2.0/24"))
        self.assertEqual(await server.accounts_for_ip(ip_address("192.0.2.7")), [])
        await server.set_setting("shop", "wrap", 0)
        self.assertEqual((await server.get_account("shop")).settings.wrap, 0)  # type: ignore[union-attr]

    async def test_answers_are_copies(self) -> None:
        """Changing a list the cache handed out does not change the next answer."""
        server, _, _ = await self.two_processes()
        (await server.accounts_for_ip(ip_address("192.0.2.7"))).clear()
        self.assertEqual(len(await server.accounts_for_ip(ip_address("192.0.2.7"))), 1)


class WriteBatchTests(SQLiteFileMixin, TestCase):
    async def test_events_written_together_fail_alone(self) -> None:
        """Send events recorded at once share transactions; one for an unknown account fails only
        its own Deferred, the others are all committed when theirs fire."""
        store = await self.open()
        await store.add_account("shop", None)
        results = await DeferredList([
            store.record_event("shop" if index != 2 else "nobody", TrackingEvent(SEND_EVENT, "Q1", f"r{index}@x.test",
                                                                                   float(index)))
            for index in range(6)], consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [True, True, False, True, True, True])
        results[2][1].trap(InputError)
        self.assertEqual(await store.event_counts("shop", "Q1"), {SEND_EVENT: 5})
