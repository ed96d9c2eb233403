"""``python -m bench.workloads``: the workloads users bring, against local testing mode and bare Aer.

Cases: the client's executor Estimator (default options, PEC, ZNE with gate folding
and with PEA) on 27-, 127- and 156-qubit fake backends; ``EstimatorV2`` with an observable on
every qubit of a 127-qubit device; a matrix of random noisy ``SamplerV2`` circuits on 5-, 27- and
127-qubit backends. Each job runs through the unmodified client against the embedded server;
its server time is ``metrics()`` finished - created. Baselines run in the same run, in a child
process stopped after ``--baseline-timeout`` seconds: local testing mode (the same client class
with a fake backend as its mode) and bare Aer (``AerSimulator`` with ``NoiseModel.from_backend``
running the same ISA circuit). Results are appended to ``bench/RESULTS.md`` (section
"Workloads").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.servers import deployment

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BACKENDS = {"fake_manila": "FakeManilaV2", "fake_kolkata": "FakeKolkataV2", "fake_sherbrooke": "FakeSherbrooke",
            "fake_fez": "FakeFez"}  # fmt: skip
# (backend, qubits, depth, shots) of the random-circuit matrix.
MATRIX = [
    ("fake_manila", 2, 5, 100),
    ("fake_manila", 5, 20, 4000),
    ("fake_manila", 5, 40, 10000),
    ("fake_kolkata", 4, 10, 1000),
    ("fake_kolkata", 8, 40, 10000),
    ("fake_kolkata", 10, 20, 1000),
    ("fake_kolkata", 12, 8, 1000),
    ("fake_kolkata", 16, 5, 100),
    ("fake_sherbrooke", 2, 5, 1000),
    ("fake_sherbrooke", 6, 20, 10000),
    ("fake_sherbrooke", 10, 10, 1000),
    ("fake_sherbrooke", 14, 5, 100),
]


def local_backend(name: str) -> Any:
    import qiskit_ibm_runtime.fake_provider as fakes

    return getattr(fakes, BACKENDS[name])()


# ---- the circuits and primitives of each case, built the same way for server and baseline ----


def bell_estimator_pubs(backend: Any) -> list[Any]:
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp
    from qiskit.transpiler import generate_preset_pass_manager

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=7).run(qc)
    return [(isa, SparsePauliOp(["ZZ", "XX"]).apply_layout(isa.layout))]


def sweep_estimator_pubs(backend: Any) -> list[Any]:
    """Two PUBs of one parameterized 2-qubit circuit with sweeps of 4 and 2 values."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.quantum_info import SparsePauliOp
    from qiskit.transpiler import generate_preset_pass_manager

    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=7).run(qc)
    zz = SparsePauliOp("ZZ").apply_layout(isa.layout)
    xx = SparsePauliOp("XX").apply_layout(isa.layout)
    return [(isa, zz, np.linspace(0, np.pi, 4)[:, None]), (isa, xx, np.array([[0.3], [1.2]]))]


def executor_estimator(mode: Any, variant: str, pubs: list[Any]) -> Any:
    """The client's ``executor_estimator.Estimator`` with ``variant`` options, run on ``pubs``."""
    from qiskit.quantum_info import PauliLindbladMap
    from qiskit_ibm_runtime.executor_estimator import Estimator

    estimator = Estimator(mode=mode)
    if variant in ("pec", "zne-pea"):
        if variant == "pec":
            estimator.options.resilience.pec_mitigation = True
        else:
            estimator.options.resilience.zne_mitigation = True
            estimator.options.resilience.zne.amplifier = "pea"
        layers = estimator.find_unique_layers(pubs)
        maps = [
            PauliLindbladMap.from_sparse_list(
                [(p, [q], 2e-3) for q in range(len(layer.qubits)) for p in "XYZ"], num_qubits=len(layer.qubits)
            )
            for layer in layers
        ]
        estimator.options.resilience.layer_noise_model = list(zip(layers, maps, strict=True))
    elif variant == "zne":
        estimator.options.resilience.zne_mitigation = True
    return estimator.run(pubs)


def all_qubit_observable(mode: Any, backend: Any) -> Any:
    """``EstimatorV2``: a 3-qubit GHZ state, observable X on every qubit, resilience 1 + ZNE + twirling."""
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import SparsePauliOp
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_ibm_runtime import EstimatorV2

    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=7).run(qc)
    estimator = EstimatorV2(mode=mode)
    estimator.options.resilience_level = 1
    estimator.options.resilience.zne_mitigation = True
    estimator.options.twirling.enable_gates = True
    estimator.options.twirling.enable_measure = True
    observable = SparsePauliOp("X" * backend.num_qubits)
    return estimator.run([(isa, observable)])


def random_isa(backend: Any, qubits: int, depth: int) -> Any:
    from qiskit.circuit.random import random_circuit
    from qiskit.transpiler import generate_preset_pass_manager

    qc = random_circuit(qubits, depth, max_operands=2, measure=True, seed=1000 * qubits + depth)
    return generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=1).run(qc)


# ---- baselines, each in a child process that is stopped at the time limit ----


def _baseline_body(kind: str, args: tuple[Any, ...]) -> None:
    backend = local_backend(args[0])
    if kind == "executor":
        _, variant, pub_kind = args
        pubs = (bell_estimator_pubs if pub_kind == "bell" else sweep_estimator_pubs)(backend)
        executor_estimator(backend, variant, pubs).result()
    elif kind == "all_qubit":
        all_qubit_observable(backend, backend).result()
    elif kind in ("sampler_local", "sampler_bare"):
        _, qubits, depth, shots = args
        isa = random_isa(backend, qubits, depth)
        if kind == "sampler_local":
            from qiskit_ibm_runtime import SamplerV2

            SamplerV2(mode=backend).run([isa], shots=shots).result()
        else:
            from qiskit_aer import AerSimulator
            from qiskit_aer.noise import NoiseModel

            AerSimulator(noise_model=NoiseModel.from_backend(backend)).run(isa, shots=shots).result()


def _baseline_child(kind: str, args: tuple[Any, ...], runs: int, queue: Any) -> None:
    local_backend(args[0])  # construction is not part of what is timed
    try:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            _baseline_body(kind, args)
            times.append(time.perf_counter() - start)
        queue.put(("ok", min(times)))
    except Exception as exc:
        queue.put(("error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"))


def baseline(kind: str, args: tuple[Any, ...], timeout: float, runs: int = 1) -> tuple[float | None, str]:
    """``(seconds, text)``: the best of ``runs``; ``seconds`` is None when the baseline failed or
    did not finish within ``timeout`` seconds (all runs together)."""
    # spawn, not fork: this process has started qiskit's Rust thread pool (transpilation), and a
    # forked child that transpiles deadlocks on it.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_baseline_child, args=(kind, args, runs, queue))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        return None, f"not done after {timeout:.0f} s (stopped)"
    if queue.empty():
        return None, f"died (exit code {process.exitcode})"
    status, value = queue.get()
    return (value, f"{value:.2f} s") if status == "ok" else (None, f"fails: {value}")


# ---- the server side ----


@dataclass
class Timed:
    server: float
    client: float


def server_time(job: Any) -> float:
    stamps = job.metrics()["timestamps"]
    return (datetime.fromisoformat(stamps["finished"]) - datetime.fromisoformat(stamps["created"])).total_seconds()


def timed(submit: Callable[[], Any], repeat: int, pick: Callable[[list[float]], float] = statistics.median) -> Timed:
    """Server and client (submit to result) times of ``repeat`` runs (their median, or ``pick``)."""
    servers, clients = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        job = submit()
        job.result()
        clients.append(time.perf_counter() - start)
        servers.append(server_time(job))
    return Timed(pick(servers), pick(clients))


def run_cases(args: argparse.Namespace) -> list[str]:
    from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2

    rows = []
    service = QiskitRuntimeService()
    backends = {name: service.backend(name) for name in BACKENDS}
    for backend in backends.values():  # warm: noise model, simulators, JIT paths
        executor_estimator(backend, "default", bell_estimator_pubs(backend)).result()

    def row(case: str, measured: Timed, base: tuple[float | None, str], target: float | None) -> None:
        ratio = f"{base[0] / measured.server:.0f}x faster" if base[0] else "-"
        met = "-" if target is None else ("yes" if measured.server <= target else "**no**")
        target_text = "-" if target is None else f"<= {target:g} s"
        rows.append(
            f"| {case} | {measured.server:.3f} s (client {measured.client:.2f} s) | {base[1]} | {ratio} | "
            f"{target_text} | {met} |"
        )
        print(rows[-1], flush=True)

    limit = args.baseline_timeout
    for name in ("fake_kolkata", "fake_sherbrooke", "fake_fez"):
        backend = backends[name]
        pubs = bell_estimator_pubs(backend)
        measured = timed(lambda b=backend, p=pubs: executor_estimator(b, "default", p), args.repeat)
        base = baseline("executor", (name, "default", "bell"), limit)
        row(f"executor Estimator, Bell <ZZ+XX>, default options (TREX), {name}", measured, base, 0.5)
    for name in ("fake_sherbrooke", "fake_fez"):
        backend = backends[name]
        pubs = sweep_estimator_pubs(backend)
        for variant in ("default", "pec", "zne", "zne-pea"):
            measured = timed(lambda b=backend, v=variant, p=pubs: executor_estimator(b, v, p), args.repeat)
            base = baseline("executor", (name, variant, "sweep"), limit)
            row(f"executor Estimator, 2 PUBs with sweeps, {variant}, {name}", measured, base, 2.0)
    backend = backends["fake_sherbrooke"]
    measured = timed(lambda: all_qubit_observable(backend, backend), args.repeat)
    base = baseline("all_qubit", ("fake_sherbrooke",), limit)
    row("EstimatorV2, 3-qubit GHZ, X on all 127 qubits, resilience 1 + ZNE + twirling", measured, base, 2.0)

    for name, qubits, depth, shots in MATRIX:
        backend = backends[name]
        isa = random_isa(backend, qubits, depth)
        # Best of 2 on both sides: single runs of the same simulation differ by up to ~15% here.
        measured = timed(lambda b=backend, c=isa, s=shots: SamplerV2(mode=b).run([c], shots=s), 2, min)
        bare = baseline("sampler_bare", (name, qubits, depth, shots), limit, runs=2)
        local = baseline("sampler_local", (name, qubits, depth, shots), limit, runs=2)
        ratio_bare = f"{measured.server / bare[0]:.2f}x" if bare[0] else "-"
        ratio_local = f"{measured.server / local[0]:.2f}x" if local[0] else "-"
        slow_ok = bare[0] is None or bare[0] < 1.0 or measured.server <= bare[0]
        local_ok = local[0] is None or measured.server <= local[0]
        rows.append(
            f"| SamplerV2 random circuit {qubits} q, depth {depth}, {shots} shots, {name} "
            f"({dict(isa.count_ops()).get('cx', 0) + dict(isa.count_ops()).get('ecr', 0)} two-qubit gates) | "
            f"{measured.server:.3f} s | bare Aer {bare[1]}; local mode {local[1]} | {ratio_bare} of bare Aer, "
            f"{ratio_local} of local mode | <= 1.0x bare Aer (jobs >= 1 s), <= local mode | "
            f"{'yes' if slow_ok and local_ok else '**no**'} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workloads", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each estimator case (median)")
    parser.add_argument("--baseline-timeout", type=float, default=60.0)
    args = parser.parse_args()
    started = time.time()
    preload = ",".join(BACKENDS)
    with deployment(None, QRS_PRELOAD_BACKENDS=preload) as dep:
        os.environ.update(dep.client_env())
        # The client calls inspect.stack() on every request, slow under ``python -m`` (see cases.py).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            rows = pool.submit(run_cases, args).result()
    write(rows, time.time() - started)


def write(rows: list[str], elapsed: float) -> None:
    from bench.__main__ import machine, versions

    command = "python -m bench.workloads " + " ".join(sys.argv[1:])
    section = "\n".join(
        [
            "## Workloads",
            "",
            f"- command: `{command.strip()}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s)",
            f"- machine: {machine()}; the embedded server, the client and the baselines share it",
            f"- versions: {versions()}",
            "- server time: the job's `metrics()` finished - created (queueing, decoding, simulation, "
            "encoding); client: submit to result in the client, including its own transpilation and "
            "samplex building",
            "",
            "| case | this server | baseline (same run) | ratio | target | met |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else ""
    head, marker, tail = text.partition("## Workloads")
    if marker:
        rest = tail.split("\n## ", 1)
        tail = "\n## " + rest[1] if len(rest) > 1 else ""
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
