"""Sender domains on Redis: a key kept in the domain's own hash by earlier versions is moved on first use."""
from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from jangotw.model import DomainKey, DomainStatus
from jangotw.store.redis import RedisStore, open_redis_store

from ..support.redis import start_redis


class LegacyDomainTests(TestCase):
    async def test_single_key_hash_upgraded(self) -> None:
        """The old layout's key becomes the domain's first key, unverified; new keys join it."""
        server = await start_redis(self)
        store: RedisStore = await open_redis_store(reactor, server.url(0))
        self.addCleanup(store.close)
        await store.add_account("Alice", None)
        account = await store.get_account("alice")
        assert account is not None
        await store._command("HSET", "jt:domain:example.com", "account_id", account.id, "account", "Alice",
                             "selector", "s1", "private_key", "PEM", "created", "6.0")
        await store._command("SADD", f"jt:account:{account.id}:domains", "example.com")
        old = DomainKey("Alice", "example.com", "s1", "PEM", 6.0)
        self.assertEqual(await store.list_domains("alice"), [old])
        self.assertEqual(await store.domain_keys("example.com"), [old])
        self.assertEqual(await store._command("HGET", "jt:domain:example.com", "private_key"), None)
        self.assertEqual(await store.domain_status("example.com"), DomainStatus("Alice", "example.com"))
        new = await store.add_domain(DomainKey("alice", "example.com", "s2", "PEM-2", 7.0))
        self.assertEqual(await store.domain_keys("example.com"), [old, new])
