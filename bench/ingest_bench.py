#!/usr/bin/env python3
"""Throughput and latency of ingestd against two baselines measured in the same run.

    python bench/ingest_bench.py [--clients 64,256] [--procs 4] [--seconds 5] [--rounds 3]
                                 [--pipeline K] [--threads]

Servers, each driven by the same client processes (REQ sockets, one request in flight per
socket, ``--clients`` sockets spread over ``--procs`` processes; with ``--pipeline K`` above
1, DEALER sockets that send REQ's envelope and keep K requests in flight each, as a
pipelining peer does):

(a) echo:  a no-op ZeroMQ ROUTER that sends every request back: the ceiling for Python +
           ZeroMQ on this machine;
(b) naive: the classic tutorial daemon: one REP socket, json.loads, INSERT, COMMIT per
           message (SQLite WAL, synchronous=FULL, the same durability as (c));
(c) ingestd with SQLite (WAL, synchronous=FULL), started and stopped through its CLI.

Every server runs in a session of its own, as a daemon does, and the kernel's autogroup
scheduling is switched off for the run (restored afterwards; ``--autogroup as-is`` keeps it):
see ``scheduling()``.

Two loads: single-record requests, then 100-record batches, each in ``--rounds`` rounds of
(a), (b), (c) back to back. Prints requests/s, records/s, p50/p99 latency and the ratios c/a
and c/b of every round, then the median ratio: the machine's speed drifts by 10% from one
minute to the next, so a ratio is taken within a round and one disturbed round does not
decide the figure. The ``idle`` column is the share of the machine's CPU time (every core)
that nobody used during the measured span (idle and iowait, /proc/stat): a server that leaves
much of it is waiting (for an fsync, or for its clients), not short of CPU.

Ceilings: with one request in flight per client, a server's rate is clients / round trip
(Little's law). The echo is CPU-bound already at 64 clients; ingestd, whose reply waits for
an fsync, is latency-bound there and reaches its own ceiling only with more requests in
flight (every COMMIT then covers more of them). So single-record requests run at every
``--clients`` count (default 64 and 256; (b) at the first only), and the bench prints c/a at
each count and the ratio of the ceilings: ingestd's best rate over the echo's best rate, each
at whichever count gave it, within a round. This is a benchmark, not a test: it asserts
nothing, and its figures depend on the machine (record them with the command line).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing as mp
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INGESTD = os.path.join(ROOT, "examples", "ingest", "ingestd.py")
#: requests in flight per client: no more than ZeroMQ's default SNDHWM, past which the first
#: burst of sends would block before the client reads a single reply
MAX_PIPELINE = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- servers (each runs in its own process) ------------------------------------------------

def echo_server(endpoint: str, ready: Any) -> None:
    """Written as lean as ingestd's I/O loop, with the same public pyzmq calls (int flags,
    frame by frame with ``recv(copy=False)`` and ``Frame.more``, ``send`` per frame), so that
    the ceiling is a real one and not lowered by convenience wrappers ingestd does not use."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    ready.set()
    nb, more_nb = int(zmq.NOBLOCK), int(zmq.SNDMORE | zmq.NOBLOCK)
    recv, send = router.recv, router.send
    while True:
        router.poll()
        for _ in range(256):
            try:
                frame = recv(nb, copy=False)
            except zmq.Again:
                break
            frames = [frame.bytes]
            while frame.more:
                frame = recv(nb, copy=False)
                frames.append(frame.bytes)
            for part in frames[:-1]:
                send(part, more_nb)
            send(frames[-1], nb)


def naive_server(endpoint: str, db_path: str, ready: Any) -> None:
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, body TEXT NOT NULL,"
               " received_at TEXT NOT NULL)")
    context = zmq.Context()
    rep = context.socket(zmq.REP)
    rep.bind(endpoint)
    ready.set()
    while True:
        message = rep.recv()
        document = json.loads(message)
        records = document if isinstance(document, list) else [document]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        stored = 0
        for record in records:
            cursor = db.execute("INSERT OR IGNORE INTO records VALUES (?, ?, ?)",
                                (record["id"], json.dumps(record), now))
            stored += cursor.rowcount
        db.commit()
        rep.send(json.dumps({"ok": True, "stored": stored, "duplicates": len(records) - stored},
                            separators=(",", ":")).encode())


# -- load ------------------------------------------------------------------------------------

def client_proc(endpoint: str, sockets: int, batch: int, tag: str,  # noqa: PLR0917
                start_at: float, end_at: float, expect_ack: bool, pipeline: int,
                results: Any) -> None:
    """``sockets`` peers, each keeping ``pipeline`` requests in flight: REQ sockets when it is
    1 (a REQ cannot have more), DEALERs that send REQ's envelope (an empty delimiter, then
    the body) otherwise. Both servers answer a connection's requests in order, so the time
    each was sent is kept in a FIFO per socket."""
    context = zmq.Context()
    poller = zmq.Poller()
    socks = []
    kind = zmq.REQ if pipeline == 1 else zmq.DEALER
    for _ in range(sockets):
        sock = context.socket(kind)
        sock.linger = 0
        sock.connect(endpoint)
        poller.register(sock, zmq.POLLIN)
        socks.append(sock)
    counter = 0

    def payload() -> bytes:
        nonlocal counter
        counter += 1
        if batch == 1:
            return b'{"id":"%s-%d","v":%d}' % (tag.encode(), counter, counter)
        base = counter * batch
        return ("[" + ",".join(f'{{"id":"{tag}-{base + i}","v":{i}}}'
                               for i in range(batch)) + "]").encode()

    sent_at: dict[Any, collections.deque[float]] = {sock: collections.deque() for sock in socks}

    def send(sock: Any) -> None:
        sent_at[sock].append(time.perf_counter())
        if pipeline == 1:
            sock.send(payload())
        else:
            sock.send(b"", zmq.SNDMORE)
            sock.send(payload())

    latencies: list[float] = []
    failures = 0
    while time.time() < start_at - 1.0:
        time.sleep(0.01)
    for sock in socks:
        for _ in range(pipeline):
            send(sock)
    measuring = False
    done = 0
    nb = int(zmq.NOBLOCK)
    while True:
        now_wall = time.time()
        if not measuring and now_wall >= start_at:
            measuring, done, latencies = True, 0, []
        if now_wall >= end_at:
            break
        for sock, _ in poller.poll(100):
            for _ in range(pipeline):
                try:
                    reply = sock.recv(nb)
                    if pipeline > 1:  # the empty delimiter; the reply follows
                        reply = sock.recv(nb)
                except zmq.Again:
                    break
                sent = sent_at[sock].popleft()
                if measuring:
                    latencies.append(time.perf_counter() - sent)
                    done += 1
                    if expect_ack and not reply.startswith(b'{"ok":true'):
                        failures += 1
                send(sock)
    results.put({"done": done, "latencies": latencies, "failures": failures})
    for sock in socks:
        sock.close(linger=0)
    context.term()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid``, every thread including those that ended, and of
    its children so far (ingestd's shedder)."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with (contextlib.suppress(FileNotFoundError),
              open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children):
            pids += map(int, children.read().split())
    total = 0
    for one in pids:
        with open(f"/proc/{one}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (user + system) so far of each thread of ``pid`` and of its children, by the
    name the OS knows it by (ingestd names its I/O thread and writers; libzmq names its own),
    threads of the same name summed."""
    seconds: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii") as stat:
                head, rest = stat.read().rsplit(")", 1)
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children:
                child_pids = [int(child) for child in children.read().split()]
        except FileNotFoundError:  # a thread that ended since the listing
            continue
        fields = rest.split()
        name = "main" if int(task) == pid else head.split("(", 1)[1]
        seconds[name] += (int(fields[11]) + int(fields[12])) / tick
        for child in child_pids:  # ingestd's shedder, a child of one thread
            for child_name, used in thread_cpu_seconds(child).items():
                seconds[f"child {child_name}"] += used
    return seconds


def machine_ticks() -> tuple[int, int]:
    """(idle, total) clock ticks of every CPU so far, from /proc/stat: the share of the span
    no thread could use tells a server that waits (for an fsync, say) from one that is
    short of CPU."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def drive(endpoint: str, clients: int, procs: int, batch: int,  # noqa: PLR0917
          seconds: float, tag: str, pipeline: int, server_pid: int) -> dict[str, Any]:
    results: Any = mp.Queue()
    start_at = time.time() + 1.5  # connect + 1 s warm-up
    end_at = start_at + seconds
    workers = []
    per_proc = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    for index, count in enumerate(per_proc):
        worker = mp.Process(target=client_proc, args=(endpoint, count, batch, f"{tag}{index}",
                                                      start_at, end_at, tag != "a", pipeline,
                                                      results))
        worker.start()
        workers.append(worker)
    # the server's CPU over the measured span: per request, a figure a loaded machine
    # disturbs much less than throughput (every server waits for a CPU, none does more work)
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before, threads_before = cpu_seconds(server_pid), thread_cpu_seconds(server_pid)
    idle_before, total_before = machine_ticks()
    time.sleep(max(0.0, end_at - time.time()))
    idle_after, total_after = machine_ticks()
    # the breakdown misses threads that ended within the span; the total does not
    threads_used = {name: used - threads_before.get(name, 0.0)
                    for name, used in thread_cpu_seconds(server_pid).items()}
    cpu_used = cpu_seconds(server_pid) - cpu_before
    gathered = [results.get(timeout=seconds + 30) for _ in workers]
    for worker in workers:
        worker.join(10)
    latencies = sorted(x for r in gathered for x in r["latencies"])
    requests = sum(r["done"] for r in gathered)
    return {
        "req_s": requests / seconds,
        "rec_s": requests * batch / seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "failures": sum(r["failures"] for r in gathered),
        "cpu_us": 1e6 * cpu_used / requests if requests else float("nan"),
        "idle": (idle_after - idle_before) / max(1, total_after - total_before),
        "threads_us": {name: 1e6 * used / requests
                       for name, used in sorted(threads_used.items(), key=lambda kv: -kv[1])
                       if requests and used > 0},
    }


# -- orchestration ---------------------------------------------------------------------------

def as_daemon(target: Any, *args: Any) -> None:
    """Run a baseline server in a session of its own, as ingestd (a daemon) runs in its own.

    With the kernel's autogroup scheduling (sched_autogroup_enabled, on by default in
    Debian's kernel), the CPU is shared fairly between sessions before threads: a server in
    the clients' session competes with them thread by thread, a server in its own session
    gets a share as a whole. All three servers must be scheduled the same way.
    """
    os.setsid()
    target(*args)


def with_process_server(target: Any, args: tuple[Any, ...], run: Any) -> dict[str, Any]:
    ready = mp.Event()
    server = mp.Process(target=as_daemon, args=(target, *args, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(10):
            raise RuntimeError("server did not start")
        assert server.pid is not None
        return run(server.pid)  # type: ignore[no-any-return]
    finally:
        server.kill()
        server.join(10)


def with_ingestd(workdir: str, endpoint: str, run: Any, db: str | None = None,
                 script: str = INGESTD) -> dict[str, Any]:
    base = [sys.executable, script, "--pidfile", os.path.join(workdir, "ingestd.pid"),
            "--log-file", os.path.join(workdir, "ingestd.log")]
    db = db or f"sqlite:///{os.path.join(workdir, 'ingest.db')}"
    subprocess.run([*base, "start", "--bind", endpoint, "--db", db], check=True, cwd=workdir,
                   stdout=subprocess.DEVNULL)
    try:
        with open(os.path.join(workdir, "ingestd.pid"), encoding="ascii") as pidfile:
            pid = int(pidfile.read())
        figures: dict[str, Any] = run(pid)
        status = json.loads(subprocess.run([*base, "status", "--json"], check=True,
                                           capture_output=True, text=True).stdout)
        figures["batch"] = status["mean_batch_requests"]
        figures["commit_ms"] = status["mean_commit_ms"]
        return figures
    finally:
        subprocess.run([*base, "stop"], check=True, cwd=workdir, stdout=subprocess.DEVNULL)


AUTOGROUP = "/proc/sys/kernel/sched_autogroup_enabled"


def autogroup() -> str:
    try:
        with open(AUTOGROUP, encoding="ascii") as setting:
            return "on" if setting.read().strip() == "1" else "off"
    except OSError:
        return "unknown"


def set_autogroup(enabled: bool) -> None:
    with open(AUTOGROUP, "w", encoding="ascii") as setting:
        setting.write("1" if enabled else "0")


@contextlib.contextmanager
def scheduling(mode: str) -> Iterator[str]:
    """Per-thread CPU sharing for the run (``off``), unless told to leave the kernel as is.

    With autogroup on, the kernel first shares the CPU between sessions: the clients' session
    and the server's session get a half each when both want more, and the figures then tell
    how the kernel splits two cores between two groups of threads more than how fast each
    server's code is. Off, every thread competes with every other, as in one session. The
    setting is restored afterwards; bench/ingest.md records figures both ways.
    """
    before = autogroup()
    wanted = before if mode == "as-is" else mode
    if before in (wanted, "unknown"):
        yield before
        return
    try:
        set_autogroup(wanted == "on")
    except OSError as exc:
        print(f"cannot switch autogroup {wanted} ({exc.strerror}): measuring as it is")
        yield before
        return
    try:
        yield wanted
    finally:
        set_autogroup(before == "on")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=client_counts, default=client_counts("64,256"),
                        help="REQ sockets, a comma-separated list: single-record requests "
                             "run at each count, 100-record requests at the first "
                             "(default 64,256)")
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (a), (b), (c) per load; ratios are per round, then the "
                             "median (default 3)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pipeline", type=int, default=1,
                        help="requests in flight per client: 1 is a REQ socket; more are "
                             "DEALERs sending REQ's envelope (default 1)")
    parser.add_argument("--only", choices=("single", "batch"))
    parser.add_argument("--autogroup", choices=("off", "on", "as-is"), default="off",
                        help="kernel autogroup scheduling during the run (default off, "
                             "restored afterwards; needs root)")
    parser.add_argument("--ingestd", metavar="SCRIPT", default=INGESTD,
                        help="the ingestd to measure as (c), e.g. another checkout's "
                             "examples/ingest/ingestd.py (default: this checkout's)")
    parser.add_argument("--threads", action="store_true",
                        help="also print each server's CPU per request thread by thread")
    parser.add_argument("--db", metavar="URL",
                        help="run (c) against this database instead of a fresh SQLite file "
                             "(postgresql://... or mysql://...; records are added to it)")
    args = parser.parse_args()
    if not 1 <= args.pipeline <= MAX_PIPELINE:
        parser.error(f"--pipeline must be between 1 and {MAX_PIPELINE}")
    with scheduling(args.autogroup) as mode:
        measure(args, mode)


def client_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts are positive integers")
    return counts


def measure(args: argparse.Namespace, autogroup_mode: str) -> None:
    peers = ("REQ clients" if args.pipeline == 1
             else f"DEALER clients ({args.pipeline} requests in flight each)")
    print(f"{','.join(map(str, args.clients))} {peers} in {args.procs} processes, "
          f"{args.seconds:g} s per run, "
          f"{args.rounds} round{'s' if args.rounds > 1 else ''} of (a), (b), (c) per load, "
          f"{os.cpu_count()} CPUs, pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, "
          f"SQLite {sqlite3.sqlite_version}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"autogroup scheduling: {autogroup_mode} (every server runs in a session of its own)")
    print(f"(c): {args.ingestd}")
    loads = [("single", 1), ("batch", args.batch)]
    medians: dict[str, float] = {}
    if args.only:
        loads = [load for load in loads if load[0] == args.only]
    for label, batch in loads:
        counts = args.clients if batch == 1 else args.clients[:1]
        print(f"\n{label} ({batch} record{'s' if batch > 1 else ''} per request)")
        print(f"  {'round':<5} {'server':<14} {'req/s':>9} {'records/s':>10} {'p50 ms':>8}"
              f" {'p99 ms':>8} {'failed':>6} {'server CPU us/req':>17} {'idle':>5}")
        rounds = []
        with tempfile.TemporaryDirectory(prefix="ingest-bench-") as workdir:
            for index in range(1, args.rounds + 1):
                figures = one_round(args, workdir, label, batch, index, counts)
                rounds.append(figures)
                for name, fig in figures.items():
                    print(f"  {index:<5} {name:<14} {fig['req_s']:>9.0f} {fig['rec_s']:>10.0f} "
                          f"{fig['p50_ms']:>8.2f} {fig['p99_ms']:>8.2f} {fig['failures']:>6.0f}"
                          f" {fig['cpu_us']:>17.1f} {fig['idle']:>5.0%}")
                    if args.threads:
                        print(f"  {'':<5} {'':<14} threads, us/req: " + ", ".join(
                            f"{name} {used:.1f}" for name, used in fig["threads_us"].items()))
                b = figures["b naive"]
                for count in counts:
                    a, c = figures[f"a echo {count}"], figures[f"c ingestd {count}"]
                    print(f"  {index:<5} {count} clients: ingestd {c['batch']:.1f} requests "
                          f"per COMMIT, {c['commit_ms']:.2f} ms per COMMIT (INSERT + fsync); "
                          f"c/a {c['req_s'] / a['req_s']:.2f}x  "
                          f"c/b {c['req_s'] / b['req_s']:.2f}x  "
                          f"c records/s per a req/s {c['rec_s'] / a['req_s']:.2f}x")
                if len(counts) > 1:
                    print(f"  {index:<5} ceilings: c/a {ceiling_ratio(figures, 'req_s'):.2f}x")
        # each round's servers run back to back, so a ratio within a round compares them on
        # the same machine state; the median over rounds discards the odd disturbed round
        first = counts[0]
        for count in counts:
            a, c = f"a echo {count}", f"c ingestd {count}"
            ratio_a = statistics.median(r[c]["req_s"] / r[a]["req_s"] for r in rounds)
            ratio_b = statistics.median(r[c]["req_s"] / r["b naive"]["req_s"] for r in rounds)
            ratio_rec = statistics.median(r[c]["rec_s"] / r[a]["req_s"] for r in rounds)
            print(f"  median of {len(rounds)}, {count} clients: c/a requests {ratio_a:.2f}x   "
                  f"c/b requests {ratio_b:.2f}x   c records/s per a req/s {ratio_rec:.2f}x")
            print(f"  median of {len(rounds)}, {count} clients: ingestd's CPU per request "
                  f"{statistics.median(r[c]['cpu_us'] for r in rounds):.1f} us, the echo's "
                  f"{statistics.median(r[a]['cpu_us'] for r in rounds):.1f} us")
            medians[f"{label} c/a {count}"] = ratio_a
        medians[f"{label} echo req/s"] = statistics.median(
            max(r[f"a echo {n}"]["req_s"] for n in counts) for r in rounds)
        medians[f"{label} c records/s"] = statistics.median(
            r[f"c ingestd {first}"]["rec_s"] for r in rounds)
        if len(counts) > 1:
            medians[f"{label} ceilings"] = statistics.median(
                ceiling_ratio(r, "req_s") for r in rounds)
            print(f"  median of {len(rounds)}: ceilings c/a {medians[label + ' ceilings']:.2f}x")
    if any(key.startswith("single c/a ") for key in medians):
        same = "  ".join(f"{key.split()[-1]} clients {value:.2f}x"
                         for key, value in medians.items() if key.startswith("single c/a "))
        ceilings = medians.get("single ceilings")
        print(f"\ntargets: single-record c/a (>= 0.5x, aim 0.7x): same clients: {same}"
              + (f"; ceilings {ceilings:.2f}x" if ceilings is not None else ""))
    if "single echo req/s" in medians and "batch c records/s" in medians:
        print("targets: batched ingestd records/s / single-record echo req/s "
              f"{medians['batch c records/s'] / medians['single echo req/s']:.2f}x (>= 3x; "
              "medians over the rounds)")
    # the figures mean little without it: on 2 shared cores every hop waits for a CPU
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def ceiling_ratio(figures: dict[str, dict[str, Any]], key: str) -> float:
    """ingestd's best over the echo's best, each at the client count that gave it."""
    best = {name: max(fig[key] for label, fig in figures.items() if label.startswith(name))
            for name in ("a echo", "c ingestd")}
    return best["c ingestd"] / best["a echo"]


def one_round(args: argparse.Namespace, workdir: str, label: str, batch: int,  # noqa: PLR0917
              index: int, counts: list[int]) -> dict[str, dict[str, Any]]:
    """(a), (b) and (c) back to back with the same client processes' settings, (a) and (c)
    at each client count ((b), 100 times slower, at the first only)."""
    def load(endpoint: str, tag: str, clients: int) -> Any:
        return lambda pid: drive(endpoint, clients, args.procs, batch, args.seconds, tag,
                                 args.pipeline, pid)

    figures: dict[str, dict[str, Any]] = {}
    workdir = os.path.join(workdir, f"round{index}")  # every round starts from empty databases
    os.mkdir(workdir)
    for count in counts:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        figures[f"a echo {count}"] = with_process_server(echo_server, (endpoint,),
                                                         load(endpoint, "a", count))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    figures["b naive"] = with_process_server(
        naive_server, (endpoint, os.path.join(workdir, "naive.db")),
        load(endpoint, "b", counts[0]))
    for count in counts:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        # unique ids in a database that persists, and a fresh SQLite file per run
        tag = f"c{label[0]}{index}-{count}-{os.getpid()}"
        run_dir = os.path.join(workdir, f"clients{count}")
        os.mkdir(run_dir)
        figures[f"c ingestd {count}"] = with_ingestd(run_dir, endpoint,
                                                     load(endpoint, tag, count), args.db,
                                                     args.ingestd)
    return figures


if __name__ == "__main__":
    main()
