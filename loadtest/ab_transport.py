#!/usr/bin/env python3
"""A/B of the gRPC port's two HTTP/2 transports on one seeded cluster (docs/BENCHMARKS.md).

For each round, alternating `--grpc-transport native` and `tonic`, it starts `cattail serve`
against an already seeded API server, connects N light agents at once (the connect storm), lets
them idle, churns, and reads from /proc and /metrics:

- storm: time to the slowest agent's first sync (the agents' own histogram) and server CPU;
- server RSS idle, right after the storm, and after the churn, per agent;
- server CPU per message sent during the churn, and the agents' fan-out p99.

Usage (after `cargo build --release -p cattail-server -p cattail-loadtest` and a seeded
testenv: `cattail-testenv up --dir DIR` then `cattail-loadtest seed --scenario medium
--kubeconfig DIR/kubeconfig`):

    loadtest/ab_transport.py --kubeconfig DIR/kubeconfig --agents 1000 --nodes 1000 \
        --rounds 4 --churn 20s

Everything it starts is stopped when it ends, also on Ctrl-C or error.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATTAIL = os.path.join(ROOT, "target/release/cattail")
LOADTEST = os.path.join(ROOT, "target/release/cattail-loadtest")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def metric(admin, name):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def quantile(wire, q):
    """A quantile of a histogram in the loadtest's wire form: [(value, count), ...]."""
    total = sum(count for _, count in wire)
    if total == 0:
        return 0
    seen = 0
    for value, count in sorted(wire):
        seen += count
        if seen >= q * total:
            return value
    return sorted(wire)[-1][0]


def wait_ready(admin, server, deadline):
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"cattail serve exited ({server.returncode}) before it was ready")
        try:
            if urllib.request.urlopen(f"http://{admin}/readyz", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("cattail serve was not ready in time")


def read_line(agents, deadline):
    """The agents process's next JSON line (progress every second, or a report)."""
    while time.time() < deadline:
        line = agents.stdout.readline()
        if not line:
            sys.exit("the agents process ended early")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    sys.exit("no output from the agents process in time")


def report(agents, deadline):
    agents.stdin.write("report\n")
    agents.stdin.flush()
    while True:
        line = read_line(agents, deadline)
        if line.get("type") == "report":
            return line


def round_(args, transport, children):
    grpc, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [CATTAIL, "serve", "--kubeconfig", args.kubeconfig, "--listen", grpc,
         "--admin-listen", admin, "--grpc-transport", transport, "--shutdown-grace", "5s",
         "--insecure-plaintext"],
        env={**os.environ, "RUST_LOG": "warn"}, stdout=subprocess.DEVNULL,
        stderr=open(f"/tmp/ab-{transport}.log", "a"))
    children.append(server)
    wait_ready(admin, server, time.time() + 180)
    time.sleep(3)
    idle = rss_bytes(server.pid)
    cpu0 = cpu_seconds(server.pid)
    agents = subprocess.Popen(
        [LOADTEST, "agents", "--endpoint", f"http://{grpc}", "--count", str(args.agents),
         "--nodes", str(args.nodes), "--probes", "0", "--max-duration", "10m"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    children.append(agents)
    deadline = time.time() + 300
    while read_line(agents, deadline).get("synced", 0) < args.agents:
        pass
    storm_cpu = cpu_seconds(server.pid) - cpu0
    storm = report(agents, deadline)
    time.sleep(1)
    after_storm = rss_bytes(server.pid)
    time.sleep(args.settle)
    cpu1, sent1 = cpu_seconds(server.pid), metric(admin, "cattail_messages_sent_total")
    subprocess.run(
        [LOADTEST, "churn", "--kubeconfig", args.kubeconfig, "--scenario", args.scenario,
         "--duration", args.churn], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    churn_cpu = cpu_seconds(server.pid) - cpu1
    sent = metric(admin, "cattail_messages_sent_total") - sent1
    after_churn = rss_bytes(server.pid)
    window = report(agents, time.time() + 60)
    agents.stdin.write("stop\n")
    agents.stdin.close()
    agents.wait(timeout=60)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    n = args.agents
    return {
        "transport": transport,
        "storm_s": quantile(storm["sync_ms"], 1.0) / 1000,
        "storm_cpu_s": round(storm_cpu, 2),
        "idle_mib": round(idle / 2**20, 1),
        "kib_per_agent_storm": round((after_storm - idle) / n / 1024, 1),
        "kib_per_agent_churn": round((after_churn - idle) / n / 1024, 1),
        "us_per_message": round(churn_cpu / sent * 1e6, 2) if sent else None,
        "messages": int(sent),
        "fanout_p99_ms": round(quantile(window["fanout_us"], 0.99) / 1000, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--scenario", default="medium")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--churn", default="20s")
    parser.add_argument("--settle", type=float, default=10, help="seconds idle after the storm")
    args = parser.parse_args()
    for binary in (CATTAIL, LOADTEST):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is missing: cargo build --release -p cattail-server -p cattail-loadtest")
    children = []
    try:
        for i in range(args.rounds):
            result = round_(args, ["native", "tonic"][i % 2], children)
            print(json.dumps(result), flush=True)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


if __name__ == "__main__":
    main()
