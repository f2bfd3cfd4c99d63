# -*- test-case-name: tests.admin.test_campaigns -*-
"""Mailings started through the initiation mailbox, as jangomail-admin shows them."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred

from ..errors import InputError

__all__ = ["CampaignAdmin", "render_campaigns"]


def _read_all(directory: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                found.append(json.load(handle))
        except (OSError, ValueError):
            continue  # being written, or gone
    return found


@frozen
class CampaignAdmin:
    directory: str  # spool/campaigns
    blocking: Callable[..., "Deferred[Any]"]

    def list(self, account: str, campaign_id: str | None = None) -> "Deferred[list[dict[str, Any]]]":
        """The account's campaigns (or one of them), oldest first, with their counts."""
        def matching(campaigns: list[dict[str, Any]]) -> list[dict[str, Any]]:
            chosen = [c for c in campaigns if c["account"].lower() == account.lower()
                      and (campaign_id is None or c["id"] == campaign_id.upper())]
            if campaign_id is not None and not chosen:
                raise InputError(f"no campaign {campaign_id!r} for {account}")
            for campaign in chosen:
                campaign["state"] = "queued" if campaign.pop("done") else "sending"
                campaign.pop("cursor", None)
                campaign.pop("quota_reached", None)
            return chosen
        return self.blocking(_read_all, self.directory).addCallback(matching)


def render_campaigns(campaigns: list[dict[str, Any]]) -> str:
    if not campaigns:
        return "no campaigns"
    return "\n".join(
        f"{c['id']}  {c['state']}  list {c['list_name']!r}  subject {c['subject']!r}: {c['members']} members, "
        f"{c['queued']} queued, {c['suppressed']} suppressed, {c['over_quota']} over quota, {c['invalid']} invalid"
        for c in campaigns)
