# -*- test-case-name: tests.admin.test_cli -*-
"""jangomail-admin: manage accounts and what authorises them to relay, from a shell.

Parses the command line, reads a new password from standard input or the
terminal, opens the configured store, asks L{AccountAdmin} (which holds every
rule; L{ListAdmin} for contact lists, and the other service layers) and prints
its answer as text, or as one JSON document with C{--json}. C{list members}
prints each page as it is read instead, so a long list is never held whole.
C{store migrate} needs no configuration: it opens the two stores it names.
Exit status: 0 done; 1 input refused, bad configuration or unusable store
(one line on standard error); 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from getpass import getpass
from typing import Any, Callable, Mapping, NoReturn, Sequence, TypeVar, cast

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.internet.task import react
from twisted.internet.threads import deferToThreadPool
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)

from ..config import Config, load_config
from ..errors import ConfigError, InputError, PermanentError, TemporaryError
from ..store.migrate import COUNTED, migrate_stores
from ..store.opening import open_store
from .campaigns import render_campaigns
from .domains import render_check, render_domain, render_domains
from .lists import ListAdmin, render_list_import, render_lists, render_member
from .reports import render_report
from .services import Admin, build_admin
from .suppressions import csv_rows, render_import
from .loginips import render_rule, render_rules
from .logins import render_login, render_logins
from .tokens import render_new_token, render_revoked, render_tokens
from .twofactor import render_setup, render_two_factor

__all__ = ["main", "build_parser", "PROG", "DEFAULT_CONFIG", "CONFIG_ENV"]

PROG = "jangomail-admin"
DEFAULT_CONFIG = "/etc/jangotw/jangomail.toml"
CONFIG_ENV = "JANGOMAIL_CONFIG"
EXIT_INPUT = 1

Call = Callable[["Admin", argparse.Namespace], "Deferred[Any]"]
Render = Callable[[Any], str]
_Service = TypeVar("_Service")


@frozen
class _Command:
    """One leaf command: what it asks the service layer and how its answer reads."""

    call: Call
    render: Render
    parser: argparse.ArgumentParser
    needs_password: bool = False
    streams: bool = False  # the call prints its own output as it goes; its answer is not printed


@frozen
class _Standalone:
    """A command that opens the stores it names itself: it needs no configuration."""

    run: Callable[[IReactorCore, argparse.Namespace], "Deferred[Any]"]
    render: Render


# -- rendering answers as text ------------------------------------------------------------

def _lines(items: Sequence[str]) -> str:
    return "\n".join(items)


def _value(value: object) -> str:
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)


def _status(account: Mapping[str, Any]) -> str:
    return "disabled" if account["disabled"] else "enabled"


def _password(account: Mapping[str, Any]) -> str:
    return "set" if account["has_password"] else "none (IP and From authorisation only)"


def _render_list(accounts: Sequence[Mapping[str, Any]]) -> str:
    if not accounts:
        return "no accounts"
    rows = [("NAME", "STATUS", "PASSWORD", "CREATED")] + [
        (a["name"], _status(a), "set" if a["has_password"] else "none", a["created"]) for a in accounts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return _lines([f"{n:{widths[0]}}  {s:{widths[1]}}  {p:{widths[2]}}  {c}" for n, s, p, c in rows])


def _render_show(account: Mapping[str, Any]) -> str:
    def block(title: str, items: Sequence[str]) -> list[str]:
        return [f"{title}:"] + ([f"  {item}" for item in items] or ["  (none)"])
    settings = [f"{key} = {_value(value)}" for key, value in account["settings"].items()]
    return _lines([
        f"account:  {account['name']}",
        f"status:   {_status(account)}",
        f"password: {_password(account)}",
        f"created:  {account['created']}",
        *block("settings", settings),
        *block("ips", account["ips"]),
        *block("from", account["from"]),
    ])


def _render_queue(messages: Sequence[Mapping[str, Any]]) -> str:
    if not messages:
        return "the queue is empty"
    return _lines([f"{m['id']}  {m['received']}  {m['account'] or '-'}  <{m['sender']}>  "
                   f"{m['waiting']}/{m['recipients']} waiting  next: {m['next_attempt'] or '-'}"
                   + (f"  HELD: {m['held']}" if m["held"] else "")
                   + (f"\n    last reply: {m['last_reply']}" if m["last_reply"] else "") for m in messages])


def _render_message(message: Mapping[str, Any]) -> str:
    lines = [f"{key}: {message[key]}" for key in
             ("id", "received", "account", "sender", "size", "client_ip", "auth_method", "tls")]
    lines.append("recipients:")
    for r in message["recipient_states"]:
        lines.append(f"  {r['address']}: {r['status']}"
                     + (f" after {r['deferrals']} deferral(s)" if r["deferrals"] else "")
                     + (f"; next attempt {r['next_attempt']}" if r["next_attempt"] else ""))
        if r["last_reply"]:
            lines.append(f"    {r['remote'] or 'reply'}: {r['last_reply']}")
    return _lines(lines)


def _said(template: str) -> Render:
    return lambda answer: template.format_map(answer)


# -- the command line ---------------------------------------------------------------------

def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser; each leaf command's namespace carries its L{_Command} as C{command}."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage jangotw: accounts (passwords, settings, and the client networks\n"
                    "and From addresses that authorise relaying), the delivery queue, Bounce lists\n"
                    "and contact lists for mass mailings.",
        epilog="examples:\n"
               "  printf '%s\\n' \"$PASSWORD\" | jangomail-admin account add alice --password-stdin\n"
               "  jangomail-admin ip add alice 192.0.2.0/24\n"
               "  jangomail-admin from add alice @example.com\n"
               "  jangomail-admin list add alice \"News Letter\" --from \"News <news@example.com>\"\n"
               "  jangomail-admin list import alice \"News Letter\" members.csv\n"
               "  jangomail-admin --json account show alice\n"
               "  jangomail-admin queue list --account alice",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", default=environ.get(CONFIG_ENV) or DEFAULT_CONFIG,
                        help=f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    # --json is also accepted after the command; SUPPRESS keeps it from resetting the global flag.
    late_json = argparse.ArgumentParser(add_help=False)
    late_json.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    topics = parser.add_subparsers(title="commands", dest="topic", metavar="COMMAND", required=True)

    def group(name: str, help: str) -> Any:
        topic = topics.add_parser(name, help=help, description=help)
        return topic.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)

    def leaf(actions: Any, name: str, help: str, call: Call, render: Render,
             arguments: Sequence[tuple[str, str]] = (), needs_password: bool = False,
             streams: bool = False) -> argparse.ArgumentParser:
        command = actions.add_parser(name, help=help, description=help, parents=[late_json])
        for argument, argument_help in arguments:
            command.add_argument(argument, metavar=argument.upper(), help=argument_help)
        command.set_defaults(command=_Command(call, render, command, needs_password, streams))
        return command  # type: ignore[no-any-return]

    name = ("name", "account name")
    account = ("account", "account name")

    accounts = group("account", "create, inspect and change accounts")
    add = leaf(accounts, "add", "create an account", render=_said("added account {name}"),
               call=lambda admin, args: admin.accounts.add_account(args.name, args.password),
               arguments=[name], needs_password=True)
    how = add.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from the first line of standard input")
    how.add_argument("--no-password", action="store_true",
                     help="create the account without a password: it is authorised only by client IP or From address")
    leaf(accounts, "list", "list every account", render=_render_list,
         call=lambda admin, args: admin.accounts.list_accounts())
    leaf(accounts, "show", "show an account with its settings, networks and From addresses", render=_render_show,
         call=lambda admin, args: admin.accounts.show_account(args.name), arguments=[name])
    leaf(accounts, "disable", "stop an account from authenticating and relaying",
         render=_said("disabled account {name}"), call=lambda admin, args: admin.accounts.disable(args.name), arguments=[name])
    leaf(accounts, "enable", "let a disabled account relay again",
         render=_said("enabled account {name}"), call=lambda admin, args: admin.accounts.enable(args.name), arguments=[name])
    leaf(accounts, "set", "change one account setting (restrict_from: true/false; manager_email: an address)",
         render=lambda answer: f"{answer['account']}: {answer['setting']} = {_value(answer['value'])}",
         call=lambda admin, args: admin.accounts.set_setting(args.name, args.key, args.value),
         arguments=[name, ("key", "setting name"), ("value", "new value")])
    passwd = leaf(accounts, "passwd", "change an account's password", render=_said("changed the password of {name}"),
                  call=lambda admin, args: admin.accounts.set_password(args.name, args.password),
                  arguments=[name], needs_password=True)
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from the first line of standard input")
    initiation = leaf(accounts, "set-initiation-password",
                      "set the password that authorises the account's mass mailings (not its login password)",
                      render=_said("changed the initiation password of {account}"),
                      call=lambda admin, args: _lists(admin).set_initiation_password(args.name, args.password),
                      arguments=[name], needs_password=True)
    initiation.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")

    ips = group("ip", "client networks whose connections relay as an account")
    network = ("network", "an address (a /32 or /128) or a CIDR range such as 192.0.2.0/24")
    leaf(ips, "add", "authorise a network", render=_said("authorised {network} for {account}"),
         call=lambda admin, args: admin.accounts.add_ip(args.account, args.network), arguments=[account, network])
    leaf(ips, "remove", "remove an authorised network", render=_said("removed {network} from {account}"),
         call=lambda admin, args: admin.accounts.remove_ip(args.account, args.network), arguments=[account, network])
    leaf(ips, "list", "list an account's networks", render=_lines,
         call=lambda admin, args: admin.accounts.list_ips(args.account), arguments=[account])

    froms = group("from", "From addresses whose mail relays as an account")
    address = ("address", "user@example.com, or @example.com for every address at the domain")
    leaf(froms, "add", "authorise a From address or domain", render=_said("authorised From {address} for {account}"),
         call=lambda admin, args: admin.accounts.add_from(args.account, args.address), arguments=[account, address])
    leaf(froms, "remove", "remove an authorised From address", render=_said("removed From {address} from {account}"),
         call=lambda admin, args: admin.accounts.remove_from(args.account, args.address), arguments=[account, address])
    leaf(froms, "list", "list an account's From addresses", render=_lines,
         call=lambda admin, args: admin.accounts.list_from(args.account), arguments=[account])

    domains = group("domain", "sender domains: DKIM keys, the DNS records to publish, their check")
    sender_domain = ("domain", "the domain, e.g. example.com or news.example.com")
    added_domain = leaf(domains, "add", "give an account a sender domain and a new DKIM key; prints every "
                                        "record to publish (SPF, DKIM, DMARC, tracking, return path)",
                        render=render_domain, arguments=[account, sender_domain],
                        call=lambda admin, args: admin.domains.add_domain(args.account, args.domain, args.selector,
                                                                          args.ed25519))
    added_domain.add_argument("--selector", metavar="S", help="DKIM selector (default: jt<YYYYMM>)")
    added_domain.add_argument("--ed25519", action="store_true",
                              help="an Ed25519 key too, for a second signature (RFC 8463; selector S-ed)")
    leaf(domains, "list", "list an account's domains, their status and keys", render=render_domains,
         call=lambda admin, args: admin.domains.list_domains(args.account), arguments=[account])
    leaf(domains, "show", "a domain's status, keys and the records to publish", render=render_domain,
         call=lambda admin, args: admin.domains.show(args.domain), arguments=[sender_domain])
    leaf(domains, "check", "look the domain's records up in DNS: each OK, missing or wrong, with the fix; "
                           "keys sign once their record verified", render=render_check,
         call=lambda admin, args: admin.domains.check(args.domain), arguments=[sender_domain])
    rotated = leaf(domains, "rotate-key", "add a new DKIM key under a new selector: it signs once verified; the "
                                          "old one stays published until retired", render=render_domain, arguments=[sender_domain],
                   call=lambda admin, args: admin.domains.rotate_key(args.domain, args.selector))
    rotated.add_argument("--selector", metavar="S", help="DKIM selector (default: jt<YYYYMM>, then b, c...)")
    leaf(domains, "retire-key", "stop signing with a key and stop listing it (then remove its record)",
         render=_said("retired key {selector} of {domain}"),
         call=lambda admin, args: admin.domains.retire_key(args.domain, args.selector),
         arguments=[sender_domain, ("selector", "the key's selector")])
    forced = leaf(domains, "force-sign", "sign with a key before domain check found its record",
                  render=lambda key: f"key {key['selector']} of {key['domain']}: {key['state']}, "
                                     + ("signs" if key["signs"] else "signs once verified"),
                  call=lambda admin, args: admin.domains.force_sign(args.domain, args.selector, not args.off),
                  arguments=[sender_domain, ("selector", "the key's selector")])
    forced.add_argument("--off", action="store_true", help="sign with it only once verified again")

    queue = group("queue", "messages waiting for delivery")
    listing = leaf(queue, "list", "list queued messages, oldest first", render=_render_queue,
                   call=lambda admin, args: admin.queue.list(args.account))
    listing.add_argument("--account", metavar="ACCOUNT", help="only this account's messages")
    leaf(queue, "show", "one queued message and each recipient's state", render=_render_message,
         call=lambda admin, args: admin.queue.show(args.id), arguments=[("id", "queue id")])
    retry = leaf(queue, "retry", "ask the server to try now, ignoring the retry backoff",
                 render=_said("retry of {target} requested; the running server acts on it within a second"),
                 call=lambda admin, args: admin.queue.retry(None if args.all else args.id))
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="queue id")
    which.add_argument("--all", action="store_true", help="every queued message")
    leaf(queue, "delete", "drop a message without delivering it further",
         render=_said("deletion of {target} requested; the running server acts on it within a second"),
         call=lambda admin, args: admin.queue.delete(args.id), arguments=[("id", "queue id")])

    leaf(queue, "resend-held", "send the account's held (over-quota) mail of the last 3 days again",
         render=_said("resend of {target}'s held mail requested; the running server acts on it within a second"),
         call=lambda admin, args: admin.queue.resend_held(args.account), arguments=[account])

    suppress = group("suppress", "the Bounce and Unsubscribe lists: addresses never delivered to")
    entry = ("address", "user@example.com, or @example.com for a whole domain")

    def listed(name: str, help: str, call: Call, render: Render,
               arguments: Sequence[tuple[str, str]] = ()) -> argparse.ArgumentParser:
        command = leaf(suppress, name, help, call=call, render=render, arguments=arguments)
        command.add_argument("--list", dest="list_name", choices=("bounce", "unsubscribe"), required=True,
                             help="which list")
        return command

    added = listed("add", "add an address or domain", render=_said("{address} is on the {list} list of {account}"),
                   call=lambda admin, args: admin.suppressions.add(args.account, args.list_name, args.address,
                                                                    args.reason),
                   arguments=[account, entry])
    added.add_argument("--reason", default="added by an administrator", help="why (shown in listings)")
    listed("remove", "remove an address or domain",
           render=_said("{address} removed from the {list} list of {account}"),
           call=lambda admin, args: admin.suppressions.remove(args.account, args.list_name, args.address),
           arguments=[account, entry])
    listed("list", "list a suppression list: address, when, why",
           render=lambda entries: _lines([f"{e['address']}  {e['added']}  {e['reason']}" for e in entries]),
           call=lambda admin, args: admin.suppressions.list(args.account, args.list_name), arguments=[account])
    listed("import", "add every address of a CSV file (address[,reason] per row); bad rows are reported",
           render=render_import, arguments=[account, ("file", "CSV file")],
           call=lambda admin, args: admin.suppressions.import_csv(
               args.account, args.list_name, csv_rows(open(args.file, newline="", encoding="utf-8-sig"))))
    exported = listed("export", "write the list as CSV (address,reason,added)", render=lambda count: "",
                      call=_export, arguments=[account])
    exported.add_argument("file", nargs="?", metavar="FILE", help="output file (default: standard output)")

    contact_lists = group("list", "contact lists: who an account's mass mailings go to, and From whom")
    list_name = ("list_name", "list name (quote a name with spaces)")
    sender_help = 'the From of mail to the list: "News <news@example.com>" or news@example.com'
    new_list = leaf(contact_lists, "add", "create an empty contact list", render=_render_list_change("added"),
                    call=lambda admin, args: _lists(admin).add_list(args.account, args.list_name, args.sender),
                    arguments=[account, list_name])
    new_list.add_argument("--from", dest="sender", metavar="FROM", default="", help=sender_help)
    changed_list = leaf(contact_lists, "set", "change a list's From", render=_render_list_change("changed"),
                        call=lambda admin, args: _lists(admin).set_from(args.account, args.list_name, args.sender),
                        arguments=[account, list_name])
    changed_list.add_argument("--from", dest="sender", metavar="FROM", required=True,
                              help=sender_help + '; "" removes it')
    leaf(contact_lists, "default", "make a list the one mass mailings go to when they name none",
         render=_said("{name} is now the default list of {account}"),
         call=lambda admin, args: _lists(admin).set_default(args.account, args.list_name),
         arguments=[account, list_name])
    leaf(contact_lists, "import", "add or update members from a CSV file: address[,name] per row, or a header "
                                  "row (email or address first) naming every column; bad rows are reported",
         render=render_list_import, call=_import_members,
         arguments=[account, list_name, ("file", "CSV file (UTF-8)")])
    members = leaf(contact_lists, "members", "print a list's members, by address, with their fields",
                   render=lambda count: "", call=_print_members, arguments=[account, list_name], streams=True)
    members.add_argument("--after", metavar="ADDRESS", help="start after this address (paging)")
    members.add_argument("--limit", metavar="N", type=int, help="print at most N members")
    leaf(contact_lists, "remove-member", "remove an address from a list",
         render=_said("removed {address} from list {list} of {account}"),
         call=lambda admin, args: _lists(admin).remove_member(args.account, args.list_name, args.address),
         arguments=[account, list_name, ("address", "the member's address")])
    leaf(contact_lists, "delete", "delete a list and all its members", render=_render_list_change("deleted"),
         call=lambda admin, args: _lists(admin).delete_list(args.account, args.list_name),
         arguments=[account, list_name])
    leaf(contact_lists, "show", "an account's lists with From, member count and the default marked *",
         render=render_lists, call=lambda admin, args: _lists(admin).show(args.account), arguments=[account])

    report = topics.add_parser("report", help="sends, opens, clicks, unsubscribes and bounces of an account",
                               description="sends, opens, clicks, unsubscribes and bounces of an account",
                               parents=[late_json])
    report.add_argument("account", metavar="ACCOUNT", help="account name")
    report.add_argument("--message", metavar="ID", help="only this message (queue id)")
    report.set_defaults(command=_Command(lambda admin, args: admin.reports.report(args.account, args.message),
                                         render_report, report))

    campaigns = group("campaign", "mailings started through the initiation mailbox")
    leaf(campaigns, "list", "an account's campaigns with their counts", render=render_campaigns,
         call=lambda admin, args: admin.campaigns.list(args.account), arguments=[account])
    leaf(campaigns, "show", "one campaign", render=render_campaigns,
         call=lambda admin, args: admin.campaigns.list(args.account, args.id),
         arguments=[account, ("id", "campaign id (the initiation message's queue id)")])

    bounces = group("bounces", "addresses on an account's Bounce list")
    leaf(bounces, "list", "list the Bounce list: address, when, and the server reply that put it there",
         render=lambda entries: _lines([f"{e['address']}  {e['added']}  {e['reason']}" for e in entries]),
         call=lambda admin, args: admin.queue.bounces(args.account), arguments=[account])

    stores = group("store", "the state store itself")
    migrate = stores.add_parser("migrate", parents=[late_json],
                                help="copy all state from an SQLite database into a Redis store",
                                description="copy all state (accounts, credentials, lists, suppressions, quotas, "
                                            "tracking, domains) from an SQLite database into a Redis store; stop "
                                            "the servers using the database first")
    migrate.add_argument("--from", dest="source", metavar="SOURCE", required=True,
                         help="sqlite:PATH, e.g. sqlite:/var/lib/jangotw/jangotw.sqlite3")
    migrate.add_argument("--to", dest="destination", metavar="DESTINATION", required=True,
                         help="redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... or unix:/PATH[?db=N]")
    migrate.add_argument("--force", action="store_true",
                         help="copy even though the destination holds accounts (again after an interrupted "
                              "copy): copied state replaces what it has under the same names; event counts add up")
    migrate.set_defaults(command=_Standalone(
        lambda reactor, args: migrate_stores(reactor, args.source, args.destination, args.force),
        _render_migration))

    password_stdin = "read the password from the first line of standard input"
    logins = group("login", "additional logins of an account: each with its own password, capabilities, API "
                            "tokens, two-factor and IP rules; SMTP AUTH user name NAME@ACCOUNT")
    login = ("name", "login name (letters, digits, '.', '_', '-')")
    capabilities = "comma-separated: relay, initiation, api, reports, settings"
    new_login = leaf(logins, "add", "give an account another login (SMTP AUTH as NAME@ACCOUNT); its password "
                                    "needs 12+ characters and a zxcvbn score of 3", render=render_login,
                     call=lambda admin, args: _credentials(admin.logins).add_login(
                         args.account, args.name, args.password, args.allow),
                     arguments=[account, login], needs_password=True)
    new_login.add_argument("--allow", metavar="CAPS", help=f"what it may do, {capabilities} (default: relay only)")
    new_login.add_argument("--password-stdin", action="store_true", help=password_stdin)
    leaf(logins, "list", "list an account's additional logins", render=render_logins,
         call=lambda admin, args: _credentials(admin.logins).list_logins(args.account), arguments=[account])
    leaf(logins, "show", "a login with its capabilities, two-factor state, IP rules and tokens (no secrets)",
         render=render_login, call=lambda admin, args: _credentials(admin.logins).show_login(args.account, args.name),
         arguments=[account, login])
    leaf(logins, "delete", "delete a login with its tokens, IP rules and two-factor state; other logins keep working",
         render=_said("deleted login {name} of {account} ({deleted_tokens} tokens, {deleted_ip_rules} IP rules)"),
         call=lambda admin, args: _credentials(admin.logins).delete_login(args.account, args.name),
         arguments=[account, login])
    restricted = leaf(logins, "restrict", "replace what a login may do", render=render_login,
                      call=lambda admin, args: _credentials(admin.logins).restrict(args.account, args.name, args.allow),
                      arguments=[account, login])
    restricted.add_argument("--allow", metavar="CAPS", required=True, help=capabilities)
    login_passwd = leaf(logins, "passwd", "change a login's password",
                        render=_said("changed the password of login {name} of {account}"),
                        call=lambda admin, args: _credentials(admin.logins).set_password(
                            args.account, args.name, args.password),
                        arguments=[account, login], needs_password=True)
    login_passwd.add_argument("--password-stdin", action="store_true", help=password_stdin)
    leaf(logins, "disable", "stop a login (its password and tokens) authenticating; the account is unaffected",
         render=_said("disabled login {name} of {account}"),
         call=lambda admin, args: _credentials(admin.logins).disable(args.account, args.name),
         arguments=[account, login])
    leaf(logins, "enable", "let a disabled login authenticate again", render=_said("enabled login {name} of {account}"),
         call=lambda admin, args: _credentials(admin.logins).enable(args.account, args.name),
         arguments=[account, login])

    tokens = group("token", "API tokens: for applications, instead of a password (SMTP AUTH password or HTTP Bearer)")
    created = leaf(tokens, "create", "make a token and print it once (only its hash is kept)", render=render_new_token,
                   call=lambda admin, args: _credentials(admin.tokens).create(
                       args.account, args.login, args.scope, args.expires, args.label),
                   arguments=[account])
    created.add_argument("--login", metavar="NAME", help="a token of this additional login (default: the account's)")
    created.add_argument("--scope", metavar="SCOPES", help="smtp, api or smtp,api (default: smtp,api, or what the "
                                                           "login may do: smtp needs relay, api needs api)")
    created.add_argument("--expires", metavar="LIFETIME", help="e.g. 12h, 90d, 4w, or never (the default)")
    created.add_argument("--label", default="", help="what the token is for (shown in listings)")
    leaf(tokens, "list", "an account's tokens: id, prefix, login, scopes, created, expires, last used, state; "
                         "never the token", render=render_tokens,
         call=lambda admin, args: _credentials(admin.tokens).list_tokens(args.account), arguments=[account])
    leaf(tokens, "revoke", "refuse a token from now on", render=render_revoked,
         call=lambda admin, args: _credentials(admin.tokens).revoke(args.id),
         arguments=[("id", "token id, or its jgt_<id> prefix")])

    two_factor = group("2fa", "two-factor (TOTP) for an account's own login or an additional login")
    user = ("name", "ACCOUNT, or LOGIN@ACCOUNT for an additional login")
    enabled = leaf(two_factor, "enable",
                   "set up two-factor: prints the otpauth URI, a QR code and ten recovery codes, then needs a code "
                   "from the authenticator (asked for on a terminal; otherwise the set-up stays pending until "
                   "'2fa enable NAME --code CODE')", render=_render_two_factor, call=_enable_two_factor,
                   arguments=[user])
    enabled.add_argument("--code", metavar="CODE", help="confirm a pending set-up with this code, without prompting")
    disabled = leaf(two_factor, "disable", "turn two-factor off", render=_render_two_factor,
                    call=lambda admin, args: _credentials(admin.two_factor).disable(args.name, args.code, args.force),
                    arguments=[user])
    proof = disabled.add_mutually_exclusive_group(required=True)
    proof.add_argument("--code", metavar="CODE", help="a current code or an unused recovery code")
    proof.add_argument("--force", action="store_true", help="without a code (an operator with shell access)")
    leaf(two_factor, "status", "on, pending or off, with the number of unused recovery codes",
         render=render_two_factor, call=lambda admin, args: _credentials(admin.two_factor).status(args.name),
         arguments=[user])

    login_ips = group("login-ip", "addresses an account's passwords and tokens work from (unlike 'ip add', which "
                                  "lets a network relay with no credential); no entries: no restriction")
    address_range = ("range", "an address, a CIDR (192.0.2.0/24) or first-last (192.0.2.10-192.0.2.20)")
    login_option = ("--login", "an additional login's own rule (default: the account's, binding every login)")
    new_rule = leaf(login_ips, "add", "accept credentials only from this range (for the given scopes)",
                    render=render_rule, arguments=[account, address_range],
                    call=lambda admin, args: _credentials(admin.login_ips).add(
                        args.account, args.range, args.login, args.scope))
    new_rule.add_argument(login_option[0], metavar="NAME", help=login_option[1])
    new_rule.add_argument("--scope", metavar="SCOPES", help="smtp, api or smtp,api (default)")
    old_rule = leaf(login_ips, "remove", "remove a range", render=render_rule, arguments=[account, address_range],
                    call=lambda admin, args: _credentials(admin.login_ips).remove(args.account, args.range, args.login))
    old_rule.add_argument(login_option[0], metavar="NAME", help=login_option[1])
    rules = leaf(login_ips, "list", "the account's ranges and its logins' (with --login: that login's own)",
                 render=render_rules, arguments=[account],
                 call=lambda admin, args: _credentials(admin.login_ips).list_rules(args.account, args.login))
    rules.add_argument("--login", metavar="NAME", help="only this login's own ranges")
    return parser


def _render_list_change(verb: str) -> Render:
    def render(answer: Mapping[str, Any]) -> str:
        sender = f", From {answer['from']}" if answer["from"] else ", no From"
        return f"{verb} list {answer['name']} of {answer['account']} ({answer['members']} members{sender})"
    return render


def _render_migration(answer: Mapping[str, Any]) -> str:
    copied = answer["copied"]
    return _lines([f"copied {answer['from']} to {answer['to']}:",
                   *(f"  {kind:<22}{copied[kind]:>10}" for kind in COUNTED)])


def _lists(admin: Admin) -> ListAdmin:
    if admin.lists is None:
        raise ConfigError("server.store: the configured store keeps no contact lists")
    return admin.lists


def _credentials(service: _Service | None) -> _Service:
    if service is None:
        raise ConfigError("server.store: the configured store keeps no logins, tokens or two-factor state")
    return service


def _render_two_factor(answer: Mapping[str, Any]) -> str:
    """A new set-up (with how to confirm it), or what enabling or disabling did."""
    if "uri" not in answer:
        return render_two_factor(answer)
    return render_setup(answer) + (f"\nConfirm it with: {PROG} 2fa enable {answer['name']} --code CODE")


def _enable_two_factor(admin: Admin, args: argparse.Namespace) -> "Deferred[dict[str, Any]]":
    """C{2fa enable}: confirm with C{--code}; else set up, then (on a terminal, without C{--json})
    ask for a code, three times at most; a set-up not confirmed stays pending."""
    two_factor = _credentials(admin.two_factor)
    if args.code is not None:
        return two_factor.confirm(args.name, args.code)

    async def set_up() -> dict[str, Any]:
        setup: dict[str, Any] = await two_factor.begin(args.name)
        if args.json or not sys.stdin.isatty():
            return setup
        print(render_setup(setup))
        for _ in range(3):
            try:
                code = await args.prompt("Code from the authenticator app: ")
                confirmed: dict[str, Any] = await two_factor.confirm(args.name, code)
                return confirmed
            except InputError as error:
                print(f"{PROG}: {error}", file=sys.stderr)
            except EOFError:
                break
        raise InputError(f"not confirmed: the set-up stays pending; confirm it with "
                         f"'{PROG} 2fa enable {setup['name']} --code CODE'")
    return Deferred.fromCoroutine(set_up())


def _import_members(admin: Admin, args: argparse.Namespace) -> "Deferred[dict[str, Any]]":
    """C{list import}: stream the named file into the list, closing it when done."""
    lists = _lists(admin)
    try:
        handle = open(args.file, newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as error:
        raise InputError(f"cannot read {args.file}: {error.strerror or error}") from None
    return lists.import_csv(args.account, args.list_name, handle).addBoth(lambda result: (handle.close(), result)[1])


def _print_members(admin: Admin, args: argparse.Namespace) -> "Deferred[int]":
    """C{list members}: print each member as its page arrives; with C{--json}, one JSON array
    written element by element."""
    lists = _lists(admin)
    printed = 0

    def emit(member: dict[str, Any]) -> None:
        nonlocal printed
        if args.json:
            sys.stdout.write(("[\n  " if not printed else ",\n  ") + json.dumps(member, ensure_ascii=False))
        else:
            sys.stdout.write(render_member(member) + "\n")
        printed += 1

    def close(count: int) -> int:
        if args.json:
            sys.stdout.write("\n]\n" if printed else "[]\n")
        return count
    return lists.each_member(args.account, args.list_name, emit, args.after, args.limit).addCallback(close)


def _export(admin: Admin, args: argparse.Namespace) -> "Deferred[int]":
    """C{suppress export}: to the named file (closed when done) or standard output."""
    if not args.file:
        return admin.suppressions.export_csv(args.account, args.list_name, sys.stdout)
    handle = open(args.file, "w", newline="", encoding="utf-8")
    return admin.suppressions.export_csv(args.account, args.list_name, handle).addBoth(
        lambda result: (handle.close(), result)[1])


def _read_password(command: _Command, args: argparse.Namespace) -> str | None:
    """The new password, read before the reactor starts (reading blocks)."""
    if getattr(args, "no_password", False):
        return None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("no password on the first line of standard input")
        return password
    if not sys.stdin.isatty():
        command.parser.error("standard input is not a terminal: use --password-stdin to read the "
                             "password from it" + (", or --no-password" if "no_password" in args else ""))
    password = getpass("New password: ")
    if getpass("Repeat the password: ") != password:
        raise InputError("the two passwords differ")
    return password


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(EXIT_INPUT)


def _print_answer(answer: Any, command: _Command, as_json: bool) -> None:
    if command.streams:
        return
    text = json.dumps(answer, indent=2, ensure_ascii=False) if as_json else command.render(answer)
    if text:
        print(text)


async def _run(reactor: IReactorCore, config: Config, args: argparse.Namespace, password: str | None) -> None:
    """Open the store, run the command, close the store; the reactor stops when this ends."""
    threads: IReactorThreads = IReactorThreads(reactor)
    try:
        store = await open_store(reactor, config)
    except (ConfigError, InputError) as error:
        _fail(str(error))
    except Exception as error:  # an unusable data directory or database file
        _fail(f"cannot open the store under {config.server.data_dir}: {error}")
    pool = threads.getThreadPool()
    admin = await build_admin(reactor, config, store, cpu=pool, io=pool)
    args.password = password
    args.prompt = lambda text: deferToThreadPool(threads, pool, input, text)  # reading blocks
    command: _Command = args.command
    try:
        answer = await command.call(admin, args)
    except (ConfigError, InputError) as error:
        _fail(str(error))
    except Exception:
        print(f"{PROG}: internal error:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        raise SystemExit(EXIT_INPUT) from None
    finally:
        await store.close()
    _print_answer(answer, command, args.json)


async def _run_standalone(reactor: IReactorCore, command: _Standalone, args: argparse.Namespace) -> None:
    try:
        answer = await command.run(reactor, args)
    except (InputError, TemporaryError, PermanentError) as error:
        _fail(str(error))
    except Exception:
        print(f"{PROG}: internal error:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        raise SystemExit(EXIT_INPUT) from None
    print(json.dumps(answer, indent=2, ensure_ascii=False) if args.json else command.render(answer))


def _log_warnings_to_stderr() -> None:
    """Show warnings and errors logged by lower layers (e.g. an unreadable stored setting)."""
    def emit(event: dict[str, Any]) -> None:
        print(f"{PROG}: {event['log_level'].name}: {formatEvent(event)}", file=sys.stderr)
    observer = FilteringLogObserver(cast(ILogObserver, emit), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The C{jangomail-admin} console script."""
    parser = build_parser(os.environ)
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if isinstance(args.command, _Standalone):
        _log_warnings_to_stderr()
        react(_run_standalone, (args.command, args))
    command: _Command = args.command
    try:
        config = load_config(args.config)
        password = _read_password(command, args) if command.needs_password else None
    except (ConfigError, InputError) as error:
        _fail(str(error))
    except (KeyboardInterrupt, EOFError):
        _fail("interrupted")
    _log_warnings_to_stderr()
    react(_run, (config, args, password))  # installs the default reactor; exits with our status
    raise SystemExit(0)  # not reached: react() exits


if __name__ == "__main__":
    main()
