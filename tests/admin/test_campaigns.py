"""Campaigns as the CLI and the API show them: from the store, with a state and no resumption details."""
from __future__ import annotations

import json

from attrs import asdict
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.campaigns import CampaignAdmin, render_campaigns
from jangotw.errors import InputError
from jangotw.initiation.fanout import CampaignProgress
from jangotw.store.memory import MemoryStore


class CampaignAdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemoryStore(Clock())
        for name in ("shop", "other"):
            self.successResultOf(self.store.add_account(name, None))
        sending = CampaignProgress("66A1", "shop", "News", "Spring", "me@shop.test", members=2000, queued=1000,
                                   cursor="m01000@remote.test", pending="66A2", previous={"queued": 0})
        done = CampaignProgress("66B1", "shop", "News", "Summer", "me@shop.test", members=5, queued=4,
                                suppressed=1, done=True)
        for progress in (done, sending):
            self.successResultOf(self.store.save_campaign("shop", progress.id, json.dumps(asdict(progress))))
        self.admin = CampaignAdmin(self.store)

    def test_list_oldest_first_with_state(self) -> None:
        campaigns = self.successResultOf(self.admin.list("shop"))
        self.assertEqual([(c["id"], c["state"], c["queued"]) for c in campaigns],
                         [("66A1", "sending", 1000), ("66B1", "queued", 4)])
        for internal in ("cursor", "pending", "previous", "quota_reached", "done"):
            self.assertNotIn(internal, campaigns[0])
        self.assertIn("66B1  queued  list 'News'  subject 'Summer': 5 members, 4 queued, 1 suppressed",
                      render_campaigns(campaigns))

    def test_show_one(self) -> None:
        [campaign] = self.successResultOf(self.admin.list("shop", "66b1"))
        self.assertEqual(campaign["subject"], "Summer")

    def test_unknown_campaign_or_another_accounts(self) -> None:
        for account, campaign_id in (("shop", "66C1"), ("other", "66A1")):
            failure = self.failureResultOf(self.admin.list(account, campaign_id), InputError)
            self.assertIn(campaign_id, str(failure.value))
        self.assertEqual(self.successResultOf(self.admin.list("other")), [])
