"""Drive ../shared/bench/relay_bench.py against jangotw and its peers (see scripts/bench)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(os.path.dirname(ROOT), "shared", "bench")
VENV = os.path.join(ROOT, ".venv", "bin")
RESULTS = os.path.join(ROOT, "bench")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the relay exited ({process.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds:g}s")


def jangotw(directory: str, port: int, sink: int, tracking: bool = False, extra: str = "",
            setup: Callable[[list[str]], None] | None = None) -> subprocess.Popen[bytes]:
    """twistd jangomail with an IP-authorised benchmark account relaying to the sink
    (with open/click tracking and List-Unsubscribe on, when asked); C{extra} is appended to
    the configuration, C{setup} gets the admin command line before the server starts."""
    config = os.path.join(directory, "jangomail.toml")
    with open(config, "w") as handle:
        handle.write(f"""[server]
hostname = "bench.jangotw.test"
data_dir = "{directory}/data"
[smtp]
listen = ["tcp:{port}:interface=127.0.0.1"]
tls_listen = []
max_connections_per_ip = 10000
max_connections = 20000
[delivery]
relay_host = "127.0.0.1:{sink}"
{extra}""")
    admin = [os.path.join(VENV, "jangomail-admin"), "--config", config]
    subprocess.run([*admin, "account", "add", "bench", "--no-password"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*admin, "ip", "add", "bench", "127.0.0.1"], check=True, stdout=subprocess.DEVNULL)
    for setting in ("open_tracking", "click_tracking", "list_unsubscribe") if tracking else ():
        subprocess.run([*admin, "account", "set", "bench", setting, "true"], check=True, stdout=subprocess.DEVNULL)
    if tracking:
        subprocess.run([*admin, "account", "set", "bench", "tracking_domain", "https://track.bench.test"],
                       check=True, stdout=subprocess.DEVNULL)
    if setup is not None:
        setup(admin)
    return subprocess.Popen([os.path.join(VENV, "twistd"), "--nodaemon", "--pidfile=",
                             f"--logfile={directory}/twistd.log", "jangomail", "--config", config])


def peer(name: str, directory: str, port: int, sink: int) -> tuple[subprocess.Popen[bytes] | None, list[str]]:
    """Start a peer relay; returns the process (None for Postfix, a daemon) and the PIDs to measure."""
    if name == "postfix":
        master = subprocess.run(["sh", os.path.join(HARNESS, "peers", "postfix.sh"), "start", directory,
                                 str(port), str(sink)], check=True, capture_output=True, text=True)
        return None, [master.stdout.split()[-1]]
    script = {"twisted": "twisted_relay.py", "aiosmtpd": "aiosmtpd_relay.py"}[name]
    process = subprocess.Popen([os.path.join(VENV, "python"), os.path.join(HARNESS, "peers", script),
                                "--port", str(port), "--relay-port", str(sink)])
    return process, [str(process.pid)]


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def harness(target: str, port: int, sink: int, pids: list[str], args: argparse.Namespace, raw: str) -> None:
    command = [sys.executable, os.path.join(HARNESS, "relay_bench.py"), f"127.0.0.1:{port}",
               "--sink-port", str(sink), "--name", target, "--profiles", args.profiles,
               "--reps", str(args.reps), "--scale", str(args.scale), "--json", raw]
    for pid in pids:
        command += ["--pid", pid]
    subprocess.run(command, check=False)


def runs(raw: str) -> Iterator[dict[str, object]]:
    with open(raw) as handle:
        for line in handle:
            yield json.loads(line)


def memory_kb(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as handle:
        return {name: int(value.split()[0]) for name, _, value in (line.partition(":") for line in handle)
                if name in ("VmRSS", "VmHWM")}


def big_message(size: int) -> bytes:
    """An HTML newsletter with links plus a base64 attachment, about C{size} bytes."""
    from email.message import EmailMessage
    from email.policy import SMTP

    message = EmailMessage(policy=SMTP)
    message["From"] = "Bench <bench@bench.jangotw.test>"
    message["To"] = "list@sink.test"
    message["Subject"] = "memory benchmark"
    message.set_content("Hello ***uniqueid***\n" + "See https://example.test/a\n" * 100)
    message.add_alternative("<html><body>" + '<p><a href="https://example.test/b">b</a></p>' * 100
                            + "</body></html>", subtype="html")
    message.add_attachment(os.urandom(size * 3 // 4), maintype="application", subtype="octet-stream",
                           filename="data.bin")
    return message.as_bytes()


def memory(recipients: int, tracking: bool) -> dict[str, object]:
    """Peak RSS growth of the server relaying one ~29.5 MB message to C{recipients} recipients."""
    import smtplib

    directory = tempfile.mkdtemp(prefix="bench-memory-")
    port, sink = free_port(), free_port()
    sink_process = subprocess.Popen([sys.executable, os.path.join(HARNESS, "sink.py"), "--port", str(sink),
                                     "--expect", str(recipients)], stdout=subprocess.PIPE)
    server = jangotw(directory, port, sink, tracking)
    try:
        wait_for_port(port, server)
        data = big_message(29 * 1024 * 1024)  # just under the 30 MiB SIZE limit
        before = memory_kb(server.pid)
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
            client.sendmail("bench@bench.jangotw.test", [f"r{i}@sink.test" for i in range(recipients)], data)
        sink_process.wait(timeout=1800)
        after = memory_kb(server.pid)
        return {"recipients": recipients, "tracking": tracking, "message_mb": round(len(data) / 2**20, 1),
                "rss_before_mb": round(before["VmRSS"] / 1024, 1), "peak_rss_mb": round(after["VmHWM"] / 1024, 1),
                "growth_mb": round((after["VmHWM"] - before["VmRSS"]) / 1024, 1),
                "seconds": round(time.monotonic() - started, 1)}
    finally:
        stop(server)
        sink_process.kill()
        shutil.rmtree(directory, ignore_errors=True)


FANOUT_PASSWORD = "bench fanout violet harbour"


def fanout(members: int) -> dict[str, object]:
    """Recipients per second from one initiation mail to the last personalised copy at the sink
    (open and click tracking and List-Unsubscribe on: one rendered copy per member)."""
    import smtplib

    directory = tempfile.mkdtemp(prefix="bench-fanout-")
    port, inbox, sink = free_port(), free_port(), free_port()
    members_csv = os.path.join(directory, "members.csv")
    with open(members_csv, "w") as handle:
        handle.write("email,name\n")
        handle.writelines(f"member{index}@sink.test,Member {index}\n" for index in range(members))

    def setup(admin: list[str]) -> None:
        quiet = {"check": True, "stdout": subprocess.DEVNULL}
        subprocess.run([*admin, "list", "add", "bench", "Bench List", "--from", "News <news@bench.jangotw.test>"],
                       **quiet)  # type: ignore[arg-type]
        subprocess.run([*admin, "list", "import", "bench", "Bench List", members_csv], **quiet)  # type: ignore[arg-type]
        subprocess.run([*admin, "account", "set-initiation-password", "bench", "--password-stdin"],
                       input=FANOUT_PASSWORD.encode() + b"\n", **quiet)  # type: ignore[arg-type]

    # + 1: the confirmation mail to the sender also reaches the sink.
    sink_process = subprocess.Popen([sys.executable, os.path.join(HARNESS, "sink.py"), "--port", str(sink),
                                     "--expect", str(members + 1)], stdout=subprocess.PIPE)
    server = jangotw(directory, port, sink, tracking=True, setup=setup,
                     extra=f'[initiation]\nlisten = ["tcp:{inbox}:interface=127.0.0.1"]\ndomain = "in.bench.test"\n')
    try:
        wait_for_port(inbox, server)
        message = (f"From: News <news@bench.jangotw.test>\r\nTo: bench@in.bench.test\r\n"
                   f"Subject: [{FANOUT_PASSWORD}-send Bench List] Fan-out benchmark\r\n"
                   "Content-Type: text/html; charset=utf-8\r\n\r\n"
                   + "<p>Hello, see <a href=\"https://example.test/offer\">the offer</a>.</p>\r\n" * 20
                   + "<p><a href=\"https://example.test/u.z?***uniqueid***\">unsubscribe</a></p>\r\n")
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", inbox, timeout=600) as client:
            client.sendmail("news@bench.jangotw.test", ["bench@in.bench.test"], message)
        sink_process.wait(timeout=3600)
        seconds = time.monotonic() - started
        return {"members": members, "seconds": round(seconds, 1), "recipients_per_s": round(members / seconds),
                "peak_rss_mb": round(memory_kb(server.pid)["VmHWM"] / 1024, 1)}
    finally:
        stop(server)
        sink_process.kill()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark jangotw against its peers")
    parser.add_argument("--peers", default="", help="comma-separated: postfix, twisted, aiosmtpd")
    parser.add_argument("--profiles", default="latency,small,large")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--memory", action="store_true",
                        help="instead: peak RSS relaying one 30 MB message (1 recipient plain; "
                             "100 recipients with tracking)")
    parser.add_argument("--fanout", type=int, metavar="MEMBERS",
                        help="instead: fan-out rate of an initiation to a list of MEMBERS (e.g. 10000)")
    args = parser.parse_args()
    if args.fanout:
        print(json.dumps(fanout(args.fanout)))
        return
    if args.memory:
        for recipients, tracking in ((1, False), (100, True)):
            print(json.dumps(memory(recipients, tracking)))
        return
    sys.path.insert(0, HARNESS)
    import relay_bench  # the harness's own summary and table

    os.makedirs(RESULTS, exist_ok=True)
    raw = os.path.join(RESULTS, "results.jsonl")
    first = sum(1 for _ in runs(raw)) if os.path.exists(raw) else 0
    targets = ["jangotw", *[name for name in args.peers.split(",") if name]]
    for target in targets:
        directory = tempfile.mkdtemp(prefix=f"bench-{target}-")
        os.chmod(directory, 0o755)
        port, sink = free_port(), free_port()
        process: subprocess.Popen[bytes] | None = None
        try:
            if target == "jangotw":
                process = jangotw(directory, port, sink)
                pids = [str(process.pid)]
            else:
                process, pids = peer(target, directory, port, sink)
            if process is not None:
                wait_for_port(port, process)
            harness(target, port, sink, pids, args, raw)
        finally:
            stop(process)
            if target == "postfix":
                subprocess.run(["sh", os.path.join(HARNESS, "peers", "postfix.sh"), "stop", directory], check=False)
            shutil.rmtree(directory, ignore_errors=True)

    fresh = list(runs(raw))[first:]
    rows = relay_bench.summarize(fresh)
    summary = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "command": "scripts/bench " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    with open(os.path.join(RESULTS, "results.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(relay_bench.format_table(rows))


if __name__ == "__main__":
    main()
