"""``python -m bench.redis_ops``: Redis commands and round trips per small job, and small-job throughput.

A split deployment (``qiskit-runtime-server api`` + one ``worker`` process) talks to the real
Redis through a counting TCP proxy started here: every RESP command a process sends is counted
(by name), and every request/response exchange of a connection is one round trip (the client
writes after the server last answered it: a pipeline or a MULTI/EXEC block is one). ``--jobs``
small ``SamplerV2`` jobs (noisy Bell, 100 shots, fake_manila) then run one after another through
the unmodified client (``QiskitRuntimeService``), and the counts are divided by the jobs.

Background traffic (arq's queue poll, heartbeats, the orphan sweep) is not a job's: the counted
deployment polls every ``--poll-delay`` seconds (the doorbell still starts each job at once), and
the traffic of an idle period as long as the measured one is subtracted (printed as ``idle``).

Throughput is measured in the same run on two more split deployments (1 and 2 workers, no proxy):
the burst of ``bench.cases.throughput``, the median of ``--repeat`` bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import cases
from bench.servers import deployment, free_port


@dataclass
class Counts:
    """Commands (by name) and round trips seen by the proxy."""

    commands: collections.Counter[str] = field(default_factory=collections.Counter)
    round_trips: int = 0

    def snapshot(self) -> Counts:
        return Counts(collections.Counter(self.commands), self.round_trips)

    def minus(self, other: Counts) -> Counts:
        diff = collections.Counter(self.commands)
        diff.subtract(other.commands)
        return Counts(diff, self.round_trips - other.round_trips)

    @property
    def total(self) -> int:
        return sum(self.commands.values())


def _parse_commands(buf: bytearray) -> tuple[list[str], int]:
    """Complete RESP commands at the start of ``buf``: their names and the bytes they take."""
    names: list[str] = []
    pos = 0
    while pos < len(buf):
        if buf[pos : pos + 1] != b"*":  # an inline command: one line
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            names.append(bytes(buf[pos:end]).split(b" ", 1)[0].decode(errors="replace").upper())
            pos = end + 2
            continue
        end = buf.find(b"\r\n", pos)
        if end < 0:
            break
        count, cur, name, complete = int(buf[pos + 1 : end]), end + 2, "", True
        for i in range(count):
            line_end = buf.find(b"\r\n", cur)
            if line_end < 0:
                complete = False
                break
            size = int(buf[cur + 1 : line_end])
            start, stop = line_end + 2, line_end + 2 + size
            if stop + 2 > len(buf):
                complete = False
                break
            if i == 0:
                name = bytes(buf[start:stop]).decode(errors="replace").upper()
            cur = stop + 2
        if not complete:
            break
        names.append(name)
        pos = cur
    return names, pos


class CountingProxy:
    """A TCP proxy in front of Redis, in its own thread, counting what its clients send."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.counts = Counts()
        self.trace: list[tuple[int, list[str]]] | None = None  # (connection, commands) per round trip
        self._connections = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="redis-proxy")

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def snapshot(self) -> Counts:
        with self._lock:
            return self.counts.snapshot()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._connections += 1
        connection = self._connections
        current: list[str] = []
        answered = [True]  # the server answered since this client last wrote: its next write is a new round trip

        async def client_to_server() -> None:
            buf = bytearray()
            while data := await reader.read(65536):
                buf += data
                names, used = _parse_commands(buf)
                del buf[:used]
                nonlocal current
                with self._lock:
                    if answered[0]:
                        self.counts.round_trips += 1
                        answered[0] = False
                        current = []
                        if self.trace is not None:
                            self.trace.append((connection, current))
                    current.extend(names)
                    self.counts.commands.update(names)
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                answered[0] = True
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(client_to_server(), server_to_client(), return_exceptions=True)


def _proxied(redis_url: str, proxy: CountingProxy) -> str:
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))


def _client_jobs(
    dep: Any, jobs: int, proxy: CountingProxy, idle_seconds: float | None, trace: bool = False
) -> tuple[Counts, Counts, float]:
    """Run ``jobs`` SamplerV2 jobs one after another through the real client; (job counts, idle counts, seconds)."""
    import qiskit_ibm_runtime.fake_provider  # noqa: F401  (imported before the clock)
    from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

    os.environ.update(dep.client_env())
    service = QiskitRuntimeService()
    backend = service.backend("fake_manila")
    isa = cases.bell(backend)
    for _ in range(5):  # warm: noise model, simulator cache, connection pools
        SamplerV2(mode=backend).run([isa], shots=100).result()
    time.sleep(1.0)
    before = proxy.snapshot()
    start = time.perf_counter()
    for _ in range(jobs):
        result = SamplerV2(mode=backend).run([isa], shots=100).result()
        assert sum(result[0].data.meas.get_counts().values()) == 100
    elapsed = time.perf_counter() - start
    measured = proxy.snapshot().minus(before)
    if trace:
        proxy.trace = []
        SamplerV2(mode=backend).run([isa], shots=100).result()
        time.sleep(0.5)
        for connection, names in proxy.trace:
            print(f"  conn {connection:3d}: {' '.join(names)}")
        proxy.trace = None
    # As long a period without jobs: the background traffic that the window above also holds.
    quiet = proxy.snapshot()
    time.sleep(elapsed if idle_seconds is None else idle_seconds)
    idle = proxy.snapshot().minus(quiet)
    return measured, idle, elapsed


def count_per_job(redis_url: str, jobs: int, poll_delay: float, trace: bool = False) -> dict[str, Any]:
    host, port = urlsplit(redis_url).hostname or "127.0.0.1", urlsplit(redis_url).port or 6379
    proxy = CountingProxy(host, port).start()
    # The client calls inspect.stack() per request, slow under ``python -m`` frames: own thread.
    with (
        deployment(_proxied(redis_url, proxy), workers=1, QRS_POLL_DELAY=str(poll_delay)) as dep,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        measured, idle, elapsed = pool.submit(_client_jobs, dep, jobs, proxy, None, trace).result()
    per_job = measured.minus(idle)
    by_name = {name: n / jobs for name, n in per_job.commands.most_common() if n > 0}
    return {
        "commands": per_job.total / jobs,
        "round_trips": per_job.round_trips / jobs,
        "idle_commands": idle.total,
        "idle_round_trips": idle.round_trips,
        "seconds": elapsed,
        "by_name": by_name,
    }


def throughput(redis_url: str, workers: int, jobs: int, repeat: int) -> float:
    with deployment(redis_url, workers=workers) as dep:
        return statistics.median(cases.throughput(dep, jobs) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_ops", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="flushed first")
    parser.add_argument("--jobs", type=int, default=30, help="client jobs counted")
    parser.add_argument("--poll-delay", type=float, default=30.0, help="QRS_POLL_DELAY of the counted deployment")
    parser.add_argument("--throughput-jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="throughput bursts per worker count")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print the round trips of one more job")
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    counted = count_per_job(args.redis_url, args.jobs, args.poll_delay, args.trace)
    print(f"command: python -m bench.redis_ops {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"per job: {counted['commands']:.1f} commands in {counted['round_trips']:.1f} round trips "
        f"({args.jobs} jobs in {counted['seconds']:.2f} s; idle traffic subtracted: "
        f"{counted['idle_commands']} commands, {counted['idle_round_trips']} round trips)"
    )
    print("by command: " + ", ".join(f"{name} {n:.1f}" for name, n in counted["by_name"].items()))
    if not args.no_throughput:
        redis.Redis.from_url(args.redis_url).flushdb()
        one = throughput(args.redis_url, 1, args.throughput_jobs, args.repeat)
        two = throughput(args.redis_url, 2, args.throughput_jobs, args.repeat)
        print(f"throughput ({args.throughput_jobs} small jobs, median of {args.repeat}): 1 worker {one:.1f} jobs/s, "
              f"2 workers {two:.1f} jobs/s")  # fmt: skip


if __name__ == "__main__":
    main()
