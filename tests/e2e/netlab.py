"""A network of "hosts" on one machine: Linux network namespaces joined by veth pairs through a
bridge, for the multi-host test (``tests/e2e/test_multihost.py``) and ``bench/multihost.py``.

Every host is a namespace with one interface ``eth0`` holding an address of a private /24 that
exists only inside these namespaces; the bridge sits in a namespace of its own, so nothing is
added to the machine's own network and traffic only flows between namespaces made here. Names
carry a per-run tag, and :meth:`Lab.destroy` (also on errors) kills the processes started in
the hosts and deletes the namespaces, which deletes their links.

Faults: :meth:`Lab.cut`/:meth:`Lab.heal` set a host's link down/up (a partition);
:meth:`Lab.delay` adds one-way latency on a host's traffic to Redis: ``tc netem`` when the
kernel has it, else (kernels built without ``sch_netem``, like this project's CI VMs) a relay
process in the host that holds every byte for the delay before forwarding it to Redis, which
costs the same round-trip time. Needs root (``ip netns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
RELAY_PORT = 6390


def unusable_reason() -> str | None:
    """Why network namespaces cannot be built here, or ``None`` when they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "ip netns needs root"
    probe = f"qrsprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Lab:
    """Hosts named ``hosts`` on one bridge; ``addr[host]`` is each host's address.

    Use as a context manager (builds, then always destroys).
    """

    def __init__(self, hosts: list[str], folder: Path) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.folder = folder
        self.switch = f"qrs{self.tag}-sw"
        self.ns = {host: f"qrs{self.tag}-{host}" for host in hosts}
        net = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        self.addr = {host: f"{net}.{i + 1}" for i, host in enumerate(hosts)}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.netem = False
        self._relays: dict[str, Path] = {}

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def build(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (host, ns) in enumerate(self.ns.items()):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            port = f"p{i}"
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[host]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        first = next(iter(self.ns.values()))
        probe = subprocess.run(
            ["ip", "netns", "exec", first, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "0ms"],
            capture_output=True,
        )
        self.netem = probe.returncode == 0
        if self.netem:
            subprocess.run(["ip", "netns", "exec", first, "tc", "qdisc", "del", "dev", "eth0", "root"], check=True)

    def destroy(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in [*self.ns.values(), self.switch]:
            # Children of the processes started here (a worker's simulation process) that
            # outlived their parent: only processes inside this run's namespaces are listed.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def popen(self, host: str, argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host`` (``ip netns exec``), output to ``folder/log``."""
        out = (self.folder / log).open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        self.processes.append(proc)
        return proc

    def redis_url_for(self, host: str, redis_host: str) -> str:
        """The ``REDIS_URL`` ``host`` uses: Redis directly, or the host's delay relay without netem."""
        if self.netem:
            return f"redis://{self.addr[redis_host]}:6379/0"
        control = self.folder / f"delay-{host}"
        control.write_text("0")
        self._relays[host] = control
        argv = [sys.executable, "-m", "tests.e2e.netlab", str(RELAY_PORT), self.addr[redis_host], "6379", str(control)]
        self.popen(host, argv, f"relay-{host}.log")
        return f"redis://127.0.0.1:{RELAY_PORT}/0"

    def cut(self, host: str) -> None:
        """Partition ``host``: its link goes down (its routes with it)."""
        _ip("-n", self.ns[host], "link", "set", "eth0", "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.ns[host], "link", "set", "eth0", "up")

    def delay(self, host: str, ms: int) -> None:
        """Add ``ms`` of one-way latency to ``host``'s traffic to Redis (0 removes it)."""
        if self.netem:
            cmd = ["ip", "netns", "exec", self.ns[host], "tc", "qdisc"]
            subprocess.run([*cmd, "del", "dev", "eth0", "root"], capture_output=True)
            if ms:
                subprocess.run([*cmd, "add", "dev", "eth0", "root", "netem", "delay", f"{ms}ms"], check=True)
        else:
            self._relays[host].write_text(str(ms))
            time.sleep(0.5)  # the relay re-reads its control file every 0.2 s

    @property
    def delay_method(self) -> str:
        return "tc netem" if self.netem else "relay (no sch_netem in this kernel)"

    @contextlib.contextmanager
    def entered(self, host: str) -> Iterator[None]:
        """Run the calling thread inside ``host``'s network (``setns``): sockets it opens meanwhile
        are that host's, e.g. the unmodified client's HTTP to the API."""
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open(f"/proc/self/task/{ctypes.CDLL(None).gettid()}/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns[host]}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            yield
        finally:
            libc.setns(home, CLONE_NEWNET)
            os.close(target)
            os.close(home)


async def _relay(listen_port: int, host: str, port: int, control: Path) -> None:
    """Forward 127.0.0.1:``listen_port`` to ``host:port``, holding each chunk sent to the server
    for the delay (milliseconds) written in ``control``; replies pass at once."""
    delay = [0.0]

    async def watch() -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                delay[0] = float(control.read_text() or 0) / 1000
            await asyncio.sleep(0.2)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + (delay[0] if delayed else 0.0), data))
        except OSError:
            pass
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(OSError):
            await sender

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    watcher = asyncio.create_task(watch())
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()
    watcher.cancel()


if __name__ == "__main__":
    asyncio.run(_relay(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
