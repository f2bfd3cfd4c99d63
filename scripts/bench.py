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
from typing import Iterator

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


def jangotw(directory: str, port: int, sink: int) -> subprocess.Popen[bytes]:
    """twistd jangomail with an IP-authorised benchmark account relaying to the sink."""
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
""")
    admin = [os.path.join(VENV, "jangomail-admin"), "--config", config]
    subprocess.run([*admin, "account", "add", "bench", "--no-password"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*admin, "ip", "add", "bench", "127.0.0.1"], check=True, stdout=subprocess.DEVNULL)
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


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark jangotw against its peers")
    parser.add_argument("--peers", default="", help="comma-separated: postfix, twisted, aiosmtpd")
    parser.add_argument("--profiles", default="latency,small,large")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
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
