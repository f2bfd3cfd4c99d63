"""Spool roots per worker, and mail in a root no process serves moved to one that is served."""
from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.spool.adopt import CAMPAIGNS, adopt_orphans, spool_root
from jangotw.spool.layout import INCOMING

from .fixtures import make_spool
from .test_writer import spool_message


class SpoolRootTests(SynchronousTestCase):
    def test_roots(self) -> None:
        """One process keeps spool/ as it always had; worker I of several gets spool/w<I>/."""
        self.assertEqual(spool_root("/d/spool", 1, None), "/d/spool")
        self.assertEqual(spool_root("/d/spool", 4, None), "/d/spool")
        self.assertEqual(spool_root("/d/spool", 1, 0), "/d/spool")
        self.assertEqual(spool_root("/d/spool", 4, 3), "/d/spool/w3")


class AdoptTests(TestCase):
    async def test_worker_spools_gathered_for_one_process(self) -> None:
        """From two workers back to one process: both workers' messages, with their journals and a
        campaign's progress, are recovered by the one process; nothing is left behind."""
        spool_dir = os.path.abspath(self.mktemp())
        records = []
        for index in (0, 1):
            worker = make_spool(self, root=spool_root(spool_dir, 2, index))
            records.append(await spool_message(worker))
            with open(worker.layout.journal(INCOMING, records[-1].message_id), "w") as journal:
                journal.write("{}\n")
        os.makedirs(os.path.join(spool_dir, "w1", CAMPAIGNS))
        with open(os.path.join(spool_dir, "w1", CAMPAIGNS, "c1.json"), "w") as campaign:
            campaign.write("{}")

        self.assertEqual(adopt_orphans(spool_dir, [spool_dir]), 2)

        single = make_spool(self, root=spool_dir)
        self.assertEqual(await single.recover(), sorted(records, key=lambda record: record.message_id))
        for record in records:
            self.assertTrue(os.path.exists(single.layout.journal(INCOMING, record.message_id)))
        self.assertEqual(os.listdir(os.path.join(spool_dir, CAMPAIGNS)), ["c1.json"])
        for index in (0, 1):
            self.assertEqual(await make_spool(self, root=os.path.join(spool_dir, f"w{index}")).recover(), [])

    async def test_served_roots_untouched(self) -> None:
        """Going from one process to two workers: spool/ is emptied into w0, w1 keeps its own."""
        spool_dir = os.path.abspath(self.mktemp())
        legacy = await spool_message(make_spool(self, root=spool_dir))
        own = await spool_message(make_spool(self, root=os.path.join(spool_dir, "w1")))
        served = [spool_root(spool_dir, 2, index) for index in (0, 1)]
        self.assertEqual(adopt_orphans(spool_dir, served), 1)
        self.assertEqual(await make_spool(self, root=served[0]).recover(), [legacy])
        self.assertEqual(await make_spool(self, root=served[1]).recover(), [own])
        self.assertEqual(adopt_orphans(spool_dir, served), 0)
