# -*- test-case-name: tests.admin.test_api_routes -*-
"""Admin API routes for what an account sends: contact lists, suppression lists, the queue,
campaigns, reports and sender domains.

CSV goes both ways as a stream: an import reads the request body in chunks
from where twisted.web buffered it, an export writes rows as they are made.
Queue entries belong to the account that sent them: only an operator sees
another account's (to anyone else they are as unknown as a made-up id).
"""
from __future__ import annotations

from typing import IO, Any, cast

from ..errors import InputError
from .accounts import parse_from_address
from .api_route import CSV, ApiError, Call, Route
from .api_schema import BOOLEAN, INTEGER, STRING, Field, FieldError, Fields
from .lists import PAGE_SIZE, check_list_name
from .suppressions import LISTS, csv_rows

__all__ = ["MAIL_ROUTES"]

JSONDict = dict[str, Any]

_LISTS = "lists"
_SUPPRESSIONS = "suppressions"
_QUEUE = "queue"
_REPORTS = "reports"
_DOMAINS = "domains"

_FROM = Field("from", STRING, 'The From of mail to the list: "News <news@example.com>" or an address; "" none.',
              audited=True)


# -- contact lists -----------------------------------------------------------------------------

async def _one_list(call: Call) -> JSONDict:
    name = check_list_name(call.path["list"])
    shown = await call.need(call.admin.lists).show(call.account)
    for found in shown["lists"]:
        if found["name"].lower() == name.lower():
            return cast(JSONDict, found)
    raise InputError(f"account {call.account!r} has no list named {name!r}")


async def _change_list(call: Call) -> JSONDict:
    lists, name = call.need(call.admin.lists), call.path["list"]
    if call.body.get("default") is False:
        raise FieldError("invalid_value", "default can only be made true: make another list the default", "default")
    await _one_list(call)
    if "from" in call.body:
        await lists.set_from(call.account, name, call.body["from"])
    if call.body.get("default"):
        await lists.set_default(call.account, name)
    return await _one_list(call)


async def _import_members(call: Call) -> JSONDict:
    with call.upload("surrogateescape") as text:
        answer: JSONDict = await call.need(call.admin.lists).import_csv(call.account, call.path["list"], text)
    return answer


# -- suppressions ------------------------------------------------------------------------------

def _list_name(call: Call) -> str:
    name = call.path["list"]
    if name not in LISTS:
        raise InputError(f"unknown list {name!r}: use bounce or unsubscribe")
    return name


async def _is_suppressed(call: Call) -> JSONDict:
    """Whether mail to the address would be suppressed: listed itself, or its whole domain is."""
    list_name = _list_name(call)
    address = parse_from_address(call.path["address"], "address")
    store = call.admin.suppressions.store
    account = await store.get_account(call.account)
    if account is None:
        raise InputError(f"no account named {call.account!r}")
    found = await store.suppressed(account.name, list_name, [address])
    return {"account": account.name, "list": list_name, "address": address, "suppressed": bool(found)}


async def _import_suppressions(call: Call) -> JSONDict:
    with call.upload("replace") as text:
        answer: JSONDict = await call.admin.suppressions.import_csv(call.account, _list_name(call), csv_rows(text))
    return answer


async def _export_suppressions(call: Call) -> None:
    assert call.download is not None
    account = await call.admin.accounts.show_account(call.account)  # an unknown account is 404, not an empty file
    await call.admin.suppressions.export_csv(account["name"], _list_name(call), cast(IO[str], call.download))


# -- queue -------------------------------------------------------------------------------------

def _own(call: Call, account: str | None) -> bool:
    return call.operator or (account or "").lower() == call.me.account.name.lower()


async def _queue(call: Call) -> list[JSONDict]:
    wanted = call.query.get("account")
    if not call.operator:
        if wanted is not None and not _own(call, wanted):
            raise ApiError(403, "forbidden_account", f"this credential may act only on account "
                                                     f"{call.me.account.name!r}", "account")
        wanted = call.me.account.name
    messages: list[JSONDict] = await call.admin.queue.list(wanted)
    return messages


async def _message(call: Call) -> JSONDict:
    message: JSONDict = await call.admin.queue.show(call.path["message"])
    if not _own(call, message["account"]):
        raise InputError(f"no queued message {call.path['message']!r}")
    return message


async def _retry(call: Call) -> JSONDict:
    await _message(call)
    answer: JSONDict = await call.admin.queue.retry(call.path["message"])
    return answer


async def _delete(call: Call) -> JSONDict:
    await _message(call)
    answer: JSONDict = await call.admin.queue.delete(call.path["message"])
    return answer


# -- campaigns and reports ---------------------------------------------------------------------

async def _campaign(call: Call) -> JSONDict:
    campaigns = await call.admin.campaigns.list(call.account, call.path["campaign"])
    return campaigns[0]


# -- sender domains ----------------------------------------------------------------------------

async def _domain(call: Call) -> JSONDict:
    """The domain, if it is the account's: another account's domain is as unknown as a missing one."""
    shown: JSONDict = await call.admin.domains.show(call.path["domain"])
    if shown["account"].lower() != call.account.lower():
        raise InputError(f"no sender domain {shown['domain']} for account {call.account!r}")
    return shown


async def _check_domain(call: Call) -> JSONDict:
    checked: JSONDict = await call.admin.domains.check((await _domain(call))["domain"])
    return checked


async def _rotate_key(call: Call) -> JSONDict:
    rotated: JSONDict = await call.admin.domains.rotate_key((await _domain(call))["domain"],
                                                            call.body.get("selector"))
    return rotated


async def _retire_key(call: Call) -> JSONDict:
    retired: JSONDict = await call.admin.domains.retire_key((await _domain(call))["domain"], call.path["selector"])
    return retired


async def _force_sign(call: Call) -> JSONDict:
    forced: JSONDict = await call.admin.domains.force_sign((await _domain(call))["domain"], call.path["selector"],
                                                           call.body.get("on", True))
    return forced


def _route(method: str, suffix: str, summary: str, handler: Any, tag: str, **options: Any) -> Route:
    return Route(method, f"/accounts/{{account}}{suffix}", summary, handler, tag, **options)


MAIL_ROUTES: tuple[Route, ...] = (
    _route("GET", "/lists", "The account's contact lists, the default marked, and whether an initiation "
                            "password is set.", lambda call: call.need(call.admin.lists).show(call.account), _LISTS),
    _route("POST", "/lists", "Create an empty contact list.",
           lambda call: call.need(call.admin.lists).add_list(call.account, call.body["name"],
                                                             call.body.get("from", "")),
           _LISTS, status=201,
           body=Fields((Field("name", STRING, "The list's name (spaces allowed, no '[' or ']').", required=True,
                              audited=True), _FROM))),
    _route("GET", "/lists/{list}", "One contact list.", _one_list, _LISTS),
    _route("PATCH", "/lists/{list}", "Change a list's From, or make it the default list.", _change_list, _LISTS,
           body=Fields((_FROM, Field("default", BOOLEAN, "true: mass mailings naming no list go to this one.",
                                     audited=True)))),
    _route("DELETE", "/lists/{list}", "Delete a list with all its members.",
           lambda call: call.need(call.admin.lists).delete_list(call.account, call.path["list"]), _LISTS),
    _route("GET", "/lists/{list}/members", "One page of members by address; pass next as after for the next.",
           lambda call: call.need(call.admin.lists).members(call.account, call.path["list"], call.query.get("after"),
                                                            call.query.get("limit", PAGE_SIZE)),
           _LISTS, query=Fields((Field("after", STRING, "Start after this address."),
                                 Field("limit", INTEGER, f"At most this many (default {PAGE_SIZE}).", minimum=1,
                                       maximum=PAGE_SIZE)))),
    _route("POST", "/lists/{list}/members", "Add or update members from a CSV body (address[,name], or a header "
                                            "row naming every column); bad rows are reported by line.",
           _import_members, _LISTS, upload=CSV),
    _route("DELETE", "/lists/{list}/members/{address}", "Remove a member.",
           lambda call: call.need(call.admin.lists).remove_member(call.account, call.path["list"],
                                                                  call.path["address"]), _LISTS),
    _route("POST", "/suppressions/{list}", "Put an address (or @domain) on the bounce or unsubscribe list.",
           lambda call: call.admin.suppressions.add(call.account, _list_name(call), call.body["address"],
                                                    call.body.get("reason", "added through the API")),
           _SUPPRESSIONS, status=201,
           body=Fields((Field("address", STRING, "user@example.com, or @example.com for a whole domain.",
                              required=True, audited=True),
                        Field("reason", STRING, "Why (shown in exports).", audited=True)))),
    _route("GET", "/suppressions/{list}/export", "The whole list as CSV (address,reason,added), streamed.",
           _export_suppressions, _SUPPRESSIONS, download=CSV),
    _route("POST", "/suppressions/{list}/import", "Add every row of a CSV body (address[,reason]); bad rows are "
                                                  "reported by line.", _import_suppressions, _SUPPRESSIONS,
           upload=CSV),
    _route("GET", "/suppressions/{list}/{address}", "Whether mail to an address is suppressed by this list.",
           _is_suppressed, _SUPPRESSIONS),
    _route("DELETE", "/suppressions/{list}/{address}", "Take an address (or @domain) off the list.",
           lambda call: call.admin.suppressions.remove(call.account, _list_name(call), call.path["address"]),
           _SUPPRESSIONS),
    Route("GET", "/queue", "Queued messages, oldest first: an operator's all (or one account's), anyone else's "
                           "own.", _queue, _QUEUE,
          query=Fields((Field("account", STRING, "Only this account's messages."),))),
    Route("POST", "/queue/retry", "Ask the server to retry every queued message now (operators).",
          lambda call: call.admin.queue.retry(None), _QUEUE, operator=True),
    Route("GET", "/queue/{message}", "One queued message and each recipient's state.", _message, _QUEUE),
    Route("POST", "/queue/{message}/retry", "Ask the server to try the message now, ignoring backoff.", _retry,
          _QUEUE),
    Route("DELETE", "/queue/{message}", "Ask the server to drop the message without delivering it further.",
          _delete, _QUEUE),
    _route("POST", "/queue/resend-held", "Send the account's held (over-quota) mail of the last 3 days again.",
           lambda call: call.admin.queue.resend_held(call.account), _QUEUE),
    _route("GET", "/campaigns", "Mailings started through the initiation mailbox, with their counts.",
           lambda call: call.admin.campaigns.list(call.account), _REPORTS, capability="reports"),
    _route("GET", "/campaigns/{campaign}", "One campaign.", _campaign, _REPORTS, capability="reports"),
    _route("GET", "/report", "Sends, opens, clicks, unsubscribes and bounces (and list sizes).",
           lambda call: call.admin.reports.report(call.account, call.query.get("message")), _REPORTS,
           capability="reports", query=Fields((Field("message", STRING, "Only this message (queue id)."),))),
    _route("GET", "/domains", "The account's sender domains with their status and keys.",
           lambda call: call.admin.domains.list_domains(call.account), _DOMAINS),
    _route("POST", "/domains", "Add a sender domain with a new DKIM key; answers every record to publish.",
           lambda call: call.admin.domains.add_domain(call.account, call.body["domain"], call.body.get("selector"),
                                                      call.body.get("ed25519", False)),
           _DOMAINS, capability="settings", status=201,
           body=Fields((Field("domain", STRING, "example.com or news.example.com.", required=True, audited=True),
                        Field("selector", STRING, "DKIM selector (default jt<YYYYMM>).", audited=True),
                        Field("ed25519", BOOLEAN, "An Ed25519 key too, for a second signature (RFC 8463).",
                              audited=True)))),
    _route("GET", "/domains/{domain}", "A domain's status, keys and the records to publish.", _domain, _DOMAINS),
    _route("POST", "/domains/{domain}/check", "Look the domain's records up in DNS and store the verdict; keys "
                                              "sign once their record verified.", _check_domain, _DOMAINS,
           capability="settings"),
    _route("POST", "/domains/{domain}/keys", "Rotate: add a new DKIM key under a new selector.", _rotate_key,
           _DOMAINS, capability="settings", status=201,
           body=Fields((Field("selector", STRING, "DKIM selector (default jt<YYYYMM>, then b, c...).",
                              audited=True),))),
    _route("DELETE", "/domains/{domain}/keys/{selector}", "Retire a key: it stops signing and is no longer listed.",
           _retire_key, _DOMAINS, capability="settings"),
    _route("POST", "/domains/{domain}/keys/{selector}/force-sign", "Sign with a key before its record verified "
                                                                   "(on: false takes that back).",
           _force_sign, _DOMAINS, capability="settings",
           body=Fields((Field("on", BOOLEAN, "true (default): sign now; false: only once verified.",
                              audited=True),))),
)
