"""``python -m bench.pieces``: a 100-node QAOA evaluation's light-cone pieces in 1 process and in helpers.

QAOA part II's layer on fake_sherbrooke (resilience 1, gate twirling, 1,000 shots) at a generic
point runs as about 90 light-cone pieces (``worker/programs/estimator_cones.py``). The
estimator program runs it in this process, as the simulation process does, twice per setting:
the first evaluation builds every piece's samplex, boxing and reuse schedule, the second (new
parameter values, the same circuit: a loop's next job) finds them cached. Baseline: one process
(``QRS_PIECE_PROCESSES=1``); then ``--processes`` helpers (``worker/programs/piece_pool.py``),
each setting in a fresh child process so no cache carries over. ``--write`` replaces the
section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from datetime import UTC, datetime
from typing import Any

from bench.utility import QAOA_GENERIC, RESULTS, _qaoa_parts

SECTION = "## Light-cone pieces side by side (`python -m bench.pieces`)"
OPTIONS = {"default_shots": 1000, "twirling": {"enable_gates": True, "num_randomizations": "auto"}}
POINTS = (QAOA_GENERIC, (2.0, 0.8))


def _measure(processes: int, conn: Any) -> None:
    from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

    from qiskit_runtime_server.worker.engines.aer import engine_for
    from qiskit_runtime_server.worker.jobspec import Defaults
    from qiskit_runtime_server.worker.programs import piece_pool
    from qiskit_runtime_server.worker.programs.primitives import run_estimator
    from qiskit_runtime_server.worker.simulation_process import prepare_backend

    isa, cost = _qaoa_parts(FakeSherbrooke())
    engine = engine_for("CPU")
    prepare_backend("fake_sherbrooke")
    times, values, pieces = [], [], 0
    for point in POINTS:
        params = {"pubs": [[isa, cost, list(point)]], "options": OPTIONS, "resilience_level": 1, "version": 2}
        engine.begin_job(None, processes)
        start = time.perf_counter()
        result = run_estimator(params, "fake_sherbrooke", engine, Defaults()).result
        times.append(time.perf_counter() - start)
        values.append((float(result[0].data.evs), float(result[0].data.stds)))
        pieces = result.metadata["simulator"]["light_cones"]
    piece_pool.shutdown()
    conn.send((times, values, pieces))


def measure(processes: int) -> tuple[list[float], list[tuple[float, float]], int]:
    """(seconds of the first and second evaluation, their values, pieces) in a fresh process."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_measure, args=(processes, theirs))
    child.start()
    result: tuple[list[float], list[tuple[float, float]], int] = ours.recv()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pieces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--write", action="store_true", help="replace the section of bench/RESULTS.md")
    args = parser.parse_args()
    from bench.__main__ import machine

    started = time.perf_counter()
    base = measure(1)
    side = measure(args.processes)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        f"| {label} | {base[0][i]:.1f} s | {side[0][i]:.1f} s | {base[0][i] / side[0][i]:.2f}x |"
        for i, label in enumerate(("first evaluation (builds)", "next evaluation (cached)"))
    ]
    pairs = (base[1], side[1])
    text = "\n".join(
        [
            SECTION,
            "",
            f"- command: `python -m bench.pieces --processes {args.processes} --write` ({when}, "
            f"{time.perf_counter() - started:.0f} s)",
            f"- machine: {machine()}; {base[2]} pieces",
            "",
            f"| QAOA part II, 100 nodes, res. 1 + gate twirling | 1 process | {args.processes} helpers | speed-up |",
            "|---|---|---|---|",
            *rows,
            "",
            "Cost <H> +- std, 1 process / helpers: "
            + ", ".join(f"{a[0]:.2f} +- {a[1]:.2f} / {b[0]:.2f} +- {b[1]:.2f}" for a, b in zip(*pairs, strict=True))
            + ".",
            "",
        ]
    )
    print(text)
    if args.write:
        write_section(text)


def write_section(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION not in old:
        RESULTS.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    head, _, tail = old.partition(SECTION)
    rest = tail.split("\n## ", 1)
    RESULTS.write_text(head + text + ("\n## " + rest[1] if len(rest) > 1 else ""))


if __name__ == "__main__":
    main()
