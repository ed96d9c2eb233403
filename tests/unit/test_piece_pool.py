"""Light-cone pieces run side by side in forked helpers (worker/programs/piece_pool.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from qiskit_runtime_server.worker.engines.aer import AerEngine
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs import piece_pool
from qiskit_runtime_server.worker.programs.piece_pool import PiecePool, deal, pool_for
from qiskit_runtime_server.worker.programs.primitives import run_estimator
from tests.unit.test_light_cones import SHERBROOKE, exact_expectations, qaoa_chain, split_at, zz


@pytest.fixture(autouse=True)
def _no_helpers_left() -> Iterator[None]:
    yield
    piece_pool.shutdown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed helper stays a zombie until its parent reaps it: that is gone, too.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_deal_gives_largest_first_to_the_least_loaded_helper() -> None:
    costs = [5.0, 1.0, 4.0, 3.0, 3.0, 1.0]
    shares = deal(costs, 2)
    assert sorted(i for share in shares for i in share) == list(range(len(costs)))
    loads = [sum(costs[i] for i in share) for share in shares]
    assert loads == [8.0, 9.0] or loads == [9.0, 8.0]
    assert deal(costs, 2) == shares  # the same pieces go to the same helpers job after job
    assert deal([2.0], 3) == [[0], [], []]


def _mitigated_job(engine: AerEngine, processes: int, seed: int = 11) -> Any:
    isa, edges = qaoa_chain(10)
    observables = [zz(a, b) for a, b in edges]
    options = {"default_precision": 0.02, "simulator": {"seed_simulator": seed}, "twirling": {"enable_gates": True}}
    params = {"pubs": [(isa, observables, np.array([0.39, 0.5]))], "options": options, "resilience_level": 1}
    params["version"] = 2
    engine.begin_job(None, processes)
    return run_estimator(params, SHERBROOKE, engine, Defaults()).result, isa, edges


def test_pieces_in_helpers_give_the_values_of_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    split_at(monkeypatch, 4)
    engine = AerEngine()
    serial, isa, edges = _mitigated_job(engine, 1)
    parallel, _, _ = _mitigated_job(engine, 2)
    assert serial.metadata["simulator"]["light_cones"] > 2
    assert "piece_processes" not in serial.metadata["simulator"]
    assert parallel.metadata["simulator"]["piece_processes"] == 2
    # Each piece draws from its own generator of the seed: the same values, bit for bit, and
    # the same account of the runs (methods, widths, predicted time) merged from the helpers.
    np.testing.assert_array_equal(parallel[0].data.evs, serial[0].data.evs)
    np.testing.assert_array_equal(parallel[0].data.stds, serial[0].data.stds)
    for key in ("methods", "widest_group", "light_cones"):
        assert parallel.metadata["simulator"][key] == serial.metadata["simulator"][key]
    assert parallel.metadata["simulator"]["predicted_seconds"] == pytest.approx(
        serial.metadata["simulator"]["predicted_seconds"], rel=1e-6
    )
    # And they are the physics: within shot noise of the full-noise density matrix.
    reference = exact_expectations(isa, [("ZZ", [a, b]) for a, b in edges], np.array([[0.39, 0.5]]))[0]
    stds = np.asarray(parallel[0].data.stds)
    assert (np.abs(parallel[0].data.evs - reference) <= 5 * stds).all(), (parallel[0].data.evs, reference)
    # Another seed gives other values through the helpers too (the seed reaches them).
    other, _, _ = _mitigated_job(engine, 2, seed=12)
    assert not np.array_equal(other[0].data.evs, parallel[0].data.evs)


def test_helpers_are_kept_between_jobs_and_replaced_when_one_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    split_at(monkeypatch, 4)
    engine = AerEngine()
    _mitigated_job(engine, 2)
    pool = pool_for(engine, 2)
    pids = pool.pids
    _mitigated_job(engine, 2)
    assert pool_for(engine, 2) is pool and pool.pids == pids
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(0.2)
    result, _, _ = _mitigated_job(engine, 2)  # new helpers are forked for the next job
    assert result.metadata["simulator"]["piece_processes"] == 2
    assert pool_for(engine, 2) is not pool


def _fails_on_two(engine: Any, item: int) -> int:
    if item == 2:
        raise ProgramError("PUB 2: no good")
    return item * 10


def _dies_on_two(engine: Any, item: int) -> int:
    if item == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def test_a_piece_error_fails_the_job_and_the_pool_stays_usable() -> None:
    pool = PiecePool(AerEngine(), 2)
    try:
        with pytest.raises(ProgramError, match="PUB 2: no good"):
            pool.map(_fails_on_two, [0, 1, 2, 3], [1.0] * 4, None)
        results, reports = pool.map(_fails_on_two, [0, 1, 3], [1.0] * 3, None)
        assert results == [0, 10, 30] and len(reports) == 2
    finally:
        pool.close()


def test_a_helper_that_dies_fails_the_job_with_the_reason() -> None:
    pool = PiecePool(AerEngine(), 2)
    with pytest.raises(ProgramError, match=r"light-cone pieces stopped: .*SIGKILL"):
        pool.map(_dies_on_two, [0, 1, 2, 3], [1.0] * 4, None)
    assert not pool._helpers  # closed: the other helper is stopped too


def test_helpers_die_with_the_simulation_process() -> None:
    # The runner cancels a job by killing the simulation process; its helpers must not run on.
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from qiskit_runtime_server.worker.engines.aer import AerEngine
        from qiskit_runtime_server.worker.programs.piece_pool import PiecePool

        pool = PiecePool(AerEngine(), 2)
        print(" ".join(str(pid) for pid in pool.pids), flush=True)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    pids = [int(pid) for pid in child.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _times_ten(engine: Any, item: int) -> int:
    return item * 10


def _pool_in_daemon(conn: Any) -> None:
    pool = PiecePool(AerEngine(), 2)
    try:
        conn.send(pool.map(_times_ten, [1, 2, 3], [1.0, 1.0, 1.0], None)[0])
    finally:
        pool.close()


def test_helpers_start_from_a_daemonic_simulation_process() -> None:
    # The runner starts the simulation process as a daemonic multiprocessing child, which may
    # not start multiprocessing children of its own.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    process = context.Process(target=_pool_in_daemon, args=(theirs,), daemon=True)
    process.start()
    assert ours.poll(60), "no answer from the daemonic process"
    assert ours.recv() == [10, 20, 30]
    process.join(10)


def test_default_helpers_are_bounded_by_cores_and_by_the_job_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(piece_pool, "usable_cores", lambda: 8)
    assert piece_pool.default_processes(4096) == 4  # docker-compose's cap: 4 helpers of 1 GiB
    assert piece_pool.default_processes(65536) == 8
    assert piece_pool.default_processes(512) == 1
