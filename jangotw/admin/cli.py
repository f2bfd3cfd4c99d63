# -*- test-case-name: tests.admin.test_cli -*-
"""jangomail-admin: manage accounts and what authorises them to relay, from a shell.

Parses the command line, reads a new password from standard input or the
terminal, opens the configured store, asks L{AccountAdmin} (which holds every
rule; L{ListAdmin} for contact lists, and the other service layers) and prints
its answer as text, or as one JSON document with C{--json}. C{list members}
prints each page as it is read instead, so a long list is never held whole.
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
from typing import Any, Callable, Mapping, NoReturn, Sequence, cast

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorThreads, IReactorTime
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

from ..auth.passwords import PasswordHasher, check_strength
from ..config import Config, load_config
from ..pipeline.dkim import new_rsa_key
from ..errors import ConfigError, InputError
from ..interfaces import IListStore
from ..store.opening import open_store
from ..queue.control import ControlRequests
from ..queue.state import RetryPolicy
from ..spool.journal import DeliveryJournal
from ..spool.layout import Layout
from .accounts import AccountAdmin
from .queue import QueueAdmin
from .campaigns import CampaignAdmin, render_campaigns
from .domains import DomainAdmin, render_domain, render_domains
from .lists import ListAdmin, login_password_check, render_list_import, render_lists, render_member
from .reports import ReportAdmin, render_report
from .suppressions import SuppressionAdmin, csv_rows, render_import

__all__ = ["main", "build_parser", "PROG", "DEFAULT_CONFIG", "CONFIG_ENV"]

PROG = "jangomail-admin"
DEFAULT_CONFIG = "/etc/jangotw/jangomail.toml"
CONFIG_ENV = "JANGOMAIL_CONFIG"
EXIT_INPUT = 1

Call = Callable[["Admin", argparse.Namespace], "Deferred[Any]"]
Render = Callable[[Any], str]


@frozen
class Admin:
    """The service layers a command may call."""

    accounts: AccountAdmin
    queue: QueueAdmin
    suppressions: SuppressionAdmin
    reports: ReportAdmin
    campaigns: CampaignAdmin
    domains: DomainAdmin
    lists: ListAdmin | None  # None: the configured store keeps no contact lists (see L{_lists})


@frozen
class _Command:
    """One leaf command: what it asks the service layer and how its answer reads."""

    call: Call
    render: Render
    parser: argparse.ArgumentParser
    needs_password: bool = False
    streams: bool = False  # the call prints its own output as it goes; its answer is not printed


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

    domains = group("domain", "sender domains and their DKIM keys")
    added_domain = leaf(domains, "add", "give an account a sender domain and a new DKIM key; prints the TXT "
                                        "record to publish", render=render_domain,
                        arguments=[account, ("domain", "the domain, e.g. example.com")],
                        call=lambda admin, args: admin.domains.add_domain(args.account, args.domain, args.selector))
    added_domain.add_argument("--selector", metavar="S", help="DKIM selector (default: jt<YYYYMM>)")
    leaf(domains, "list", "list an account's domains with their TXT records", render=render_domains,
         call=lambda admin, args: admin.domains.list_domains(args.account), arguments=[account])

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
    return parser


def _render_list_change(verb: str) -> Render:
    def render(answer: Mapping[str, Any]) -> str:
        sender = f", From {answer['from']}" if answer["from"] else ", no From"
        return f"{verb} list {answer['name']} of {answer['account']} ({answer['members']} members{sender})"
    return render


def _lists(admin: Admin) -> ListAdmin:
    if admin.lists is None:
        raise ConfigError("server.store: the configured store keeps no contact lists")
    return admin.lists


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
                             "password from it" + (", or --no-password" if args.action == "add" else ""))
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
    hasher = PasswordHasher()
    try:
        store = await open_store(reactor, config)
    except (ConfigError, InputError) as error:
        _fail(str(error))
    except Exception as error:  # an unusable data directory or database file
        _fail(f"cannot open the store under {config.server.data_dir}: {error}")
    pool = threads.getThreadPool()
    hash_password: Callable[[str], Deferred[str]] = lambda text: deferToThreadPool(threads, pool, hasher.hash, text)
    strength: Callable[[str, Sequence[str]], Deferred[None]] = (
        lambda text, inputs: deferToThreadPool(threads, pool, check_strength, text, inputs))
    list_store = IListStore(store, None)
    spool_root = os.path.join(config.server.data_dir, "spool")
    delivery = config.delivery
    admin = Admin(
        accounts=AccountAdmin(store=store, hash_password=hash_password, check_password=strength),
        queue=QueueAdmin(
            journal=DeliveryJournal(Layout(spool_root), threads, pool),  # type: ignore[arg-type]
            control=ControlRequests(os.path.join(spool_root, "control")),
            store=store,
            policy=RetryPolicy(delivery.retry_base, delivery.retry_max, delivery.max_queue_lifetime),
            blocking=lambda function, *args: deferToThreadPool(threads, pool, function, *args),
        ),
        suppressions=SuppressionAdmin(store),
        reports=ReportAdmin(store),
        campaigns=CampaignAdmin(os.path.join(spool_root, "campaigns"),
                                blocking=lambda function, *args: deferToThreadPool(threads, pool, function, *args)),
        domains=DomainAdmin(store=store, clock=cast(IReactorTime, reactor),
                            make_key=lambda: deferToThreadPool(threads, pool, new_rsa_key)),
        lists=None if list_store is None else ListAdmin(
            store=list_store, hash_password=hash_password, check_password=strength,
            same_as_login=login_password_check(
                store, lambda hashed, text: deferToThreadPool(threads, pool, hasher.verify, hashed, text))),
    )
    args.password = password
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
