"""Starting the simulation process (the forkserver imports qiskit: seconds) and joining it run off
the event loop, which in the embedded server also serves the API."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a fresh interpreter: there the forkserver is not running yet, so the start is the slow
# one a worker pays at boot.
_PROBE = """
import asyncio, json, time
from qiskit_runtime_server.worker.runner import ProgramRunner

async def maybe(result):  # the runner's methods were synchronous before
    if asyncio.iscoroutine(result):
        await result

async def main():
    gaps = []
    async def ticker():
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    tick = asyncio.create_task(ticker())
    runner = ProgramRunner()
    await asyncio.sleep(0.05)
    began = time.perf_counter()
    await maybe(runner.start())
    started = time.perf_counter() - began
    await asyncio.sleep(0.05)
    await maybe(runner.close())
    tick.cancel()
    print(json.dumps({"start_s": started, "max_stall_s": max(gaps)}))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_starting_the_simulation_process_does_not_stall_the_event_loop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["start_s"] > 0.5, measured  # a real cold start
    assert measured["max_stall_s"] < 0.25, measured
