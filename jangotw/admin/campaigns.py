# -*- test-case-name: tests.admin.test_campaigns -*-
"""Mailings started through the initiation mailbox, as jangomail-admin and the API show them.

Progress comes from the store (L{IListStore.campaigns}), where the sending
node saves it after every batch, so every node and worker shows every campaign.
"""
from __future__ import annotations

import json
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred

from ..errors import InputError
from ..interfaces import IListStore

__all__ = ["CampaignAdmin", "render_campaigns"]


def _shown(document: str) -> dict[str, Any]:
    """A saved progress as shown: its counts and a state, without resumption details."""
    campaign: dict[str, Any] = json.loads(document)
    campaign["state"] = "queued" if campaign.pop("done") else "sending"
    for internal in ("cursor", "quota_reached", "pending", "previous"):
        campaign.pop(internal, None)
    return campaign


@frozen
class CampaignAdmin:
    store: IListStore

    def list(self, account: str, campaign_id: str | None = None) -> "Deferred[list[dict[str, Any]]]":
        """The account's campaigns (or one of them), oldest first, with their counts."""
        return Deferred.fromCoroutine(self._list(account, campaign_id))

    async def _list(self, account: str, campaign_id: str | None) -> list[dict[str, Any]]:
        if campaign_id is None:
            return [_shown(document) for document in await self.store.campaigns(account)]
        document = await self.store.campaign(account, campaign_id.strip().upper())
        if document is None:
            raise InputError(f"no campaign {campaign_id!r} for {account}")
        return [_shown(document)]


def render_campaigns(campaigns: list[dict[str, Any]]) -> str:
    if not campaigns:
        return "no campaigns"
    return "\n".join(
        f"{c['id']}  {c['state']}  list {c['list_name']!r}  subject {c['subject']!r}: {c['members']} members, "
        f"{c['queued']} queued, {c['suppressed']} suppressed, {c['over_quota']} over quota, {c['invalid']} invalid"
        for c in campaigns)
