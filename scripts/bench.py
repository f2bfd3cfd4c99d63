"""Drive ../shared/bench/relay_bench.py against jangotw and its peers (see scripts/bench)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import selectors
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
            setup: Callable[[list[str]], None] | None = None, workers: int = 0) -> subprocess.Popen[bytes]:
    """twistd jangomail with an IP-authorised benchmark account relaying to the sink
    (with open/click tracking and List-Unsubscribe on, when asked); C{extra} is appended to
    the configuration, C{setup} gets the admin command line before the server starts; C{workers}
    is [server] workers (0: one per CPU, the default)."""
    config = os.path.join(directory, "jangomail.toml")
    with open(config, "w") as handle:
        handle.write(f"""[server]
hostname = "bench.jangotw.test"
data_dir = "{directory}/data"
workers = {workers}
[smtp]
listen = ["tcp:{port}:interface=127.0.0.1:backlog=1024"]
tls_listen = []
max_connections_per_ip = 20000
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
    # As in production (etc/jangomail.service): standard output at level info, here into a file.
    with open(os.path.join(directory, "twistd.log"), "wb") as log:
        return subprocess.Popen([os.path.join(VENV, "twistd"), "--nodaemon", "--pidfile=", "jangomail",
                                 "--config", config], stdout=log, stderr=subprocess.STDOUT)


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


def profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy sampling C{pid} and its children (the workers) into a raw collapsed-stack file,
    written when it gets SIGINT (see L{stop_profiler})."""
    return subprocess.Popen([os.path.join(VENV, "py-spy"), "record", "--format", "raw", "--nonblocking", "--gil",
                             "--subprocesses", "--rate", "200", "--output", output, "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(process: subprocess.Popen[bytes], output: str) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    print(f"profile: {output} (collapsed stacks; top functions by own samples below)")
    own: dict[str, int] = {}
    total = 0
    with open(output) as handle:
        for line in handle:
            stack, _, count = line.rstrip().rpartition(" ")
            frame = stack.rsplit(";", 1)[-1]
            own[frame] = own.get(frame, 0) + int(count)
            total += int(count)
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:25]:
        print(f"{100 * count / max(1, total):5.1f}%  {frame}")


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


def process_tree(pid: int) -> list[int]:
    """C{pid} and its descendants (a supervisor's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    children.setdefault(int(handle.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        found.append(current)
        waiting.extend(children.get(current, ()))
    return found


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (each process's own peak) summed over C{pid}'s process tree, in kB."""
    total = {"VmRSS": 0, "VmHWM": 0, "processes": 0}
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as handle:
                for name, _, value in (line.partition(":") for line in handle):
                    if name in ("VmRSS", "VmHWM"):
                        total[name] += int(value.split()[0])
            total["processes"] += 1
        except OSError:
            continue
    return total


def wait_for_workers(pid: int, workers: int, seconds: float = 60.0) -> None:
    """Until the supervisor has C{workers} children (the listeners accept before they run)."""
    deadline = time.monotonic() + seconds
    while len(process_tree(pid)) < 1 + (workers if workers > 1 else 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # each worker opens the store and recovers its spool before it accepts


def loads() -> float:
    return round(os.getloadavg()[0], 2)


def save(section: str, result: object, started_load: float) -> None:
    """Put one mode's figures into bench/results.json (with date, machine, load and command),
    keeping the other modes' last figures."""
    path = os.path.join(RESULTS, "results.json")
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        document = {}
    if "rows" in document:  # the older one-section layout: the relay figures
        document = {"relay": document}
    document[section] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "load_average_1m": {"start": started_load, "end": loads()},
        "command": "scripts/bench " + " ".join(sys.argv[1:]),
        "result": result,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(document, handle, indent=2)


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


def memory(recipients: int, tracking: bool, workers: int) -> dict[str, object]:
    """Peak RSS growth of the server relaying one ~29.5 MB message to C{recipients} recipients
    (summed over the supervisor and its workers; only one worker takes the message)."""
    import smtplib

    directory = tempfile.mkdtemp(prefix="bench-memory-")
    port, sink = free_port(), free_port()
    sink_process = subprocess.Popen([sys.executable, os.path.join(HARNESS, "sink.py"), "--port", str(sink),
                                     "--expect", str(recipients)], stdout=subprocess.PIPE)
    server = jangotw(directory, port, sink, tracking, workers=workers)
    try:
        wait_for_port(port, server)
        wait_for_workers(server.pid, workers)
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


def idle(connections: int, workers: int) -> dict[str, object]:
    """Server memory with C{connections} idle SMTP sessions open (each greeted, then silent)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + 1024
    if hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it (ulimit -Hn) first")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))  # the server inherits it too
    directory = tempfile.mkdtemp(prefix="bench-idle-")
    port, sink = free_port(), free_port()
    server = jangotw(directory, port, sink, workers=workers)
    sockets: list[socket.socket] = []
    try:
        wait_for_port(port, server)
        wait_for_workers(server.pid, workers)
        before = memory_kb(server.pid)
        started = time.monotonic()
        greeted = 0
        with selectors.DefaultSelector() as waiting:
            for _ in range(connections):
                client = socket.create_connection(("127.0.0.1", port), timeout=30)
                client.setblocking(False)
                sockets.append(client)
                waiting.register(client, selectors.EVENT_READ)
                while len(sockets) - greeted > 500:  # at most 500 banners outstanding
                    greeted += _banners(waiting)
            while greeted < connections:
                greeted += _banners(waiting)
        seconds = time.monotonic() - started
        time.sleep(1.0)
        after = memory_kb(server.pid)
        return {"connections": connections, "processes": after["processes"], "seconds_to_open": round(seconds, 1),
                "rss_before_mb": round(before["VmRSS"] / 1024, 1), "rss_mb": round(after["VmRSS"] / 1024, 1),
                "growth_mb": round((after["VmRSS"] - before["VmRSS"]) / 1024, 1),
                "kb_per_connection": round((after["VmRSS"] - before["VmRSS"]) / connections, 1)}
    finally:
        for client in sockets:
            client.close()
        stop(server)
        shutil.rmtree(directory, ignore_errors=True)


def _banners(waiting: selectors.BaseSelector) -> int:
    """Read the 220 greetings that have arrived; how many sessions were greeted."""
    greeted = 0
    for key, _ in waiting.select(timeout=30):
        data = key.fileobj.recv(512)  # type: ignore[union-attr]
        if not data.startswith(b"220"):
            raise SystemExit(f"expected a 220 greeting, got {data[:80]!r}")
        waiting.unregister(key.fileobj)
        greeted += 1
    if not greeted:
        raise SystemExit("no greeting within 30 s")
    return greeted


FANOUT_PASSWORD = "bench fanout violet harbour"


def fanout(members: int, workers: int, profile: str | None = None) -> dict[str, object]:
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
    server = jangotw(directory, port, sink, tracking=True, setup=setup, workers=workers,
                     extra=f'[initiation]\nlisten = ["tcp:{inbox}:interface=127.0.0.1"]\ndomain = "in.bench.test"\n')
    try:
        wait_for_port(inbox, server)
        wait_for_workers(server.pid, workers)
        sampling = profiler(server.pid, profile) if profile else None
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
        if sampling is not None:
            stop_profiler(sampling, profile)  # type: ignore[arg-type]
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
    parser.add_argument("--workers", type=int, default=0, help="[server] workers (default 0: one per CPU)")
    parser.add_argument("--memory", action="store_true",
                        help="instead: peak RSS relaying one 30 MB message (1 recipient plain; "
                             "100 recipients with tracking)")
    parser.add_argument("--fanout", type=int, metavar="MEMBERS",
                        help="instead: fan-out rate of an initiation to a list of MEMBERS (e.g. 10000)")
    parser.add_argument("--idle", type=int, metavar="CONNECTIONS",
                        help="instead: server memory with CONNECTIONS idle sessions open (e.g. 10000)")
    parser.add_argument("--profile", metavar="FILE",
                        help="record jangotw with py-spy during the run (collapsed stacks to FILE)")
    args = parser.parse_args()
    started_load = loads()
    if args.fanout:
        result: object = fanout(args.fanout, args.workers, args.profile)
        print(json.dumps(result))
        save("fanout", result, started_load)
        return
    if args.memory:
        result = [memory(recipients, tracking, args.workers) for recipients, tracking in ((1, False), (100, True))]
        print(json.dumps(result))
        save("memory", result, started_load)
        return
    if args.idle:
        result = idle(args.idle, args.workers)
        print(json.dumps(result))
        save("idle", result, started_load)
        return
    relay(args, started_load)


def relay(args: argparse.Namespace, started_load: float) -> None:
    """jangotw, then each peer, on the harness's profiles; one table, figures saved."""
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
                process = jangotw(directory, port, sink, workers=args.workers)
                pids = [str(process.pid)]
            else:
                process, pids = peer(target, directory, port, sink)
            if process is not None:
                wait_for_port(port, process)
            if target == "jangotw":
                wait_for_workers(int(pids[0]), args.workers)
            sampling = profiler(int(pids[0]), args.profile) if args.profile and target == "jangotw" else None
            harness(target, port, sink, pids, args, raw)
            if sampling is not None:
                stop_profiler(sampling, args.profile)
        finally:
            stop(process)
            if target == "postfix":
                subprocess.run(["sh", os.path.join(HARNESS, "peers", "postfix.sh"), "stop", directory], check=False)
            shutil.rmtree(directory, ignore_errors=True)

    rows = relay_bench.summarize(list(runs(raw))[first:])
    for row in rows:  # the units: MB/s and CPU seconds per 1,000 messages
        size = relay_bench.PROFILES[str(row["profile"])]["size"]
        delivered = row.get("delivered_per_s")
        row["delivered_mb_per_s"] = round(float(delivered) * size / 1e6, 2) if delivered else None
        row["server_cpu_s_per_1000"] = row.get("server_cpu_ms_per_msg")
    save("relay", {"workers": args.workers or os.cpu_count(), "rows": rows}, started_load)
    print(relay_bench.format_table(rows))
    print("load average (1 min): start", started_load, "end", loads())


if __name__ == "__main__":
    main()
