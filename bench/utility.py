"""``python -m bench.utility``: IBM-tutorial-shaped utility-scale Estimator workloads, three ways.

Each case (circuits in ``bench/tutorials.py``) is run in the same run by

* **this server**: an embedded server started here, driven by the unmodified client
  (``QiskitRuntimeService()`` with the server's recipe), the ISA circuit transpiled on the client
  against ``service.backend("fake_sherbrooke")``. Server time is the job's ``metrics()``
  finished - created (queueing, decoding, simulation, encoding), summed over the case's jobs;
  client time is ``run()`` to result in the client. A job still unfinished at ``--timeout`` is
  cancelled and reported as "> N s";
* **local testing mode**: the same client primitive with ``mode=FakeSherbrooke()``, in a child
  process;
* **bare Aer**: ``qiskit_aer.primitives.EstimatorV2.from_backend(FakeSherbrooke())``
  (``AerSimulator.from_backend``: the backend's noise model), in a child process. It has no
  error suppression or mitigation options; its simulator (and noise model) is built before the
  clock starts, as a user reuses one simulator.

Children are killed at ``--timeout`` seconds ("> N s"); one that raises prints "fails (reason)".
Every column times the primitive calls only (``run()`` to result); transpilation is done before.
The table and the values each method produced are printed as markdown for ``bench/RESULTS.md``
("Utility-scale tutorials"); ``--write`` replaces that section with them.

    python -m bench.utility [--quick] [--cases ghz,chsh] [--timeout 120] [--cobyla] [--write]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import tutorials

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Utility-scale tutorials"
BACKEND = "fake_sherbrooke"
METHODS = ("server", "local", "aer")
Values = list[tuple[str, np.ndarray]]


class TimedOut(Exception):
    """The case did not finish within its time limit (a server job was cancelled)."""


def fake_backend() -> Any:
    from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

    return FakeSherbrooke()


class Runner:
    """One way of running Estimator jobs: ``server`` (client to this server), ``local`` (local
    testing mode) or ``aer`` (bare Aer). Accumulates the time of its primitive calls."""

    def __init__(self, kind: str, backend: Any, timeout: float) -> None:
        self.kind = kind
        self.backend = backend
        self.deadline = time.monotonic() + timeout
        self.client = 0.0  # run() to result, summed
        self.server = 0.0  # metrics() finished - created, summed (server only)
        # The server's predicted and measured simulation seconds (metrics()), summed.
        self.predicted = 0.0
        self.simulated = 0.0
        self.jobs = 0
        self._aer: Any = None

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """A ``Session`` on the backend (the runtime client's; a no-op for bare Aer)."""
        if self.kind == "aer":
            return contextlib.nullcontext(None)
        from qiskit_ibm_runtime import Session

        session: contextlib.AbstractContextManager[Any] = Session(backend=self.backend)
        return session

    def estimator(self, options: dict[str, Any], session: Any = None) -> Any:
        """An ``EstimatorV2`` with the tutorial's ``options`` (ignored by bare Aer)."""
        if self.kind == "aer":
            if self._aer is None:
                from qiskit_aer.primitives import EstimatorV2 as AerEstimator

                self._aer = AerEstimator.from_backend(self.backend)
            return self._aer
        from qiskit_ibm_runtime import EstimatorV2

        return EstimatorV2(mode=session if session is not None else self.backend, options=options)

    def run(self, estimator: Any, pubs: list[Any]) -> Any:
        start = time.perf_counter()
        job = estimator.run(pubs)
        result = self._wait(job) if self.kind == "server" else job.result()
        self.client += time.perf_counter() - start
        self.jobs += 1
        return result

    def _wait(self, job: Any) -> Any:
        from qiskit_ibm_runtime.exceptions import RuntimeJobTimeoutError

        remaining = self.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise RuntimeJobTimeoutError("time limit reached")
            result = job.result(timeout=remaining)
        except RuntimeJobTimeoutError:
            with contextlib.suppress(Exception):
                job.cancel()
            raise TimedOut from None
        metrics = job.metrics()
        self.predicted += metrics.get("predicted_seconds") or 0.0
        self.simulated += metrics["usage"]["quantum_seconds"] or 0.0
        stamps = metrics["timestamps"]
        self.server += (
            datetime.fromisoformat(stamps["finished"]) - datetime.fromisoformat(stamps["created"])
        ).total_seconds()
        return result


# ---- the cases: each runs its jobs through a Runner and returns the values they produced ----


def _evs(result: Any) -> np.ndarray:
    return np.asarray(result[0].data.evs, dtype=float)


def ghz_case(runner: Runner) -> Values:
    """Hello world part 2: 100-qubit GHZ, 99 observables Z0 Zi, resilience 1 + DD (XY4)."""
    isa, observables = tutorials.transpile(runner.backend, tutorials.ghz(100), tutorials.ghz_observables(100))
    options = {"resilience_level": 1, "dynamical_decoupling": {"enable": True, "sequence_type": "XY4"}}
    evs = _evs(runner.run(runner.estimator(options), [(isa, observables)]))
    return [("<Z0 Zi>, i = 1..99", evs)]


QAOA_OPTIONS = {
    "resilience_level": 1,
    "default_shots": 1000,
    "dynamical_decoupling": {"enable": True, "sequence_type": "XY4"},
    "twirling": {"enable_gates": True, "num_randomizations": "auto"},
}


def _qaoa_parts(backend: Any) -> tuple[Any, Any]:
    cost = tutorials.maxcut_hamiltonian(100, tutorials.qaoa_graph(backend))
    return tutorials.transpile(backend, tutorials.qaoa_circuit(cost), cost)


def qaoa_case(runner: Runner) -> Values:
    """QAOA part II: one layer on the 100-node graph, the cost at the tutorial's starting point."""
    isa, cost = _qaoa_parts(runner.backend)
    with runner.session() as session:
        estimator = runner.estimator(QAOA_OPTIONS, session)
        evs = _evs(runner.run(estimator, [(isa, cost, list(tutorials.QAOA_INITIAL))]))
    return [("cost <H> at (π, π/2)", evs)]


# A point where the QAOA circuit is not Clifford: every piece runs as a density matrix.
QAOA_GENERIC = (2.1, 0.7)


def qaoa_generic_case(runner: Runner) -> Values:
    """QAOA part II: one evaluation at a generic point, in a new Session."""
    isa, cost = _qaoa_parts(runner.backend)
    with runner.session() as session:
        estimator = runner.estimator(QAOA_OPTIONS, session)
        evs = _evs(runner.run(estimator, [(isa, cost, list(QAOA_GENERIC))]))
    return [("cost <H> at (2.1, 0.7)", evs)]


COBYLA_ITERATIONS = 10


def qaoa_cobyla_case(runner: Runner) -> Values:
    """QAOA part II's optimisation loop: scipy COBYLA, ``COBYLA_ITERATIONS`` evaluations, in a Session."""
    from scipy.optimize import minimize

    isa, cost = _qaoa_parts(runner.backend)
    costs: list[float] = []
    with runner.session() as session:
        estimator = runner.estimator(QAOA_OPTIONS, session)

        def objective(params: np.ndarray) -> float:
            costs.append(float(_evs(runner.run(estimator, [(isa, cost, params)]))))
            return costs[-1]

        result = minimize(objective, list(tutorials.QAOA_INITIAL), method="COBYLA",
                          options={"maxiter": COBYLA_ITERATIONS})  # fmt: skip
    return [("cost per evaluation", np.array(costs)), ("final (beta, gamma)", np.asarray(result.x, dtype=float))]


ISING_THETAS = {1: (0.0, np.pi / 8, np.pi / 4, np.pi / 2), 2: (0.0, np.pi / 8, np.pi / 4, np.pi / 2),
                5: (0.0, np.pi / 2)}  # fmt: skip


def _ising_parts(backend: Any, steps: int) -> tuple[Any, Any]:
    from qiskit.circuit import Parameter

    circuit = tutorials.kicked_ising(backend.num_qubits, tutorials.coupling_edges(backend), steps, Parameter("θ"))
    return tutorials.transpile(backend, circuit, tutorials.kicked_ising_observable(backend.num_qubits))


def ising_case(steps: int) -> Callable[[Runner], Values]:
    def case(runner: Runner) -> Values:
        isa, observable = _ising_parts(runner.backend, steps)
        thetas = np.array(ISING_THETAS[steps])[:, None]
        evs = _evs(runner.run(runner.estimator({"resilience_level": 1}), [(isa, observable, thetas)]))
        return [(f"<Z62> at θ = {_thetas_text(steps)}", evs)]

    return case


def _thetas_text(steps: int) -> str:
    names = {0.0: "0", np.pi / 8: "π/8", np.pi / 4: "π/4", np.pi / 2: "π/2"}
    return ", ".join(names[t] for t in ISING_THETAS[steps])


def chsh_case(runner: Runner) -> Values:
    """CHSH: one PUB, 2 observables x 21 angles, default options."""
    circuit, observables, thetas = tutorials.chsh()
    isa, isa_observables = tutorials.transpile(runner.backend, circuit, observables)
    evs = _evs(runner.run(runner.estimator({}), [(isa, isa_observables, thetas)]))
    return [("CHSH1 over 21 θ", evs[0]), ("CHSH2 over 21 θ", evs[1])]


def mirror_case(runner: Runner) -> Values:
    """50-qubit mirror circuit, the tutorial's last job: DD (XpXm) + TREX + gate twirling + ZNE."""
    circuit, observable = tutorials.mirror_su2(50)
    isa, isa_observable = tutorials.transpile(runner.backend, circuit, observable)
    options = {
        "default_shots": 100_000,
        "resilience_level": 0,
        "dynamical_decoupling": {"enable": True, "sequence_type": "XpXm"},
        "twirling": {"enable_gates": True, "num_randomizations": "auto"},
        "resilience": {
            "measure_mitigation": True,
            "zne_mitigation": True,
            "zne": {"noise_factors": (1, 3, 5), "extrapolator": ("exponential", "linear")},
        },
    }
    evs = _evs(runner.run(runner.estimator(options), [(isa, isa_observable)]))
    return [("<Z49>", evs)]


# ---- ideal values, where they are cheap ----


def ideal(key: str) -> Values | None:
    if key == "ghz":
        return [("<Z0 Zi>, i = 1..99", np.ones(99))]
    if key == "ising1":
        return [("<Z62> = cos θ", np.cos(ISING_THETAS[1]))]
    if key == "ising5":  # Clifford points: a stabilizer simulation of all 127 qubits
        from qiskit.quantum_info import StabilizerState

        edges = tutorials.coupling_edges(fake_backend())
        z62 = tutorials.kicked_ising_observable(127).paulis[0]
        circuits = [tutorials.kicked_ising(127, edges, 5, t) for t in ISING_THETAS[5]]
        stabilizer = [StabilizerState(c).expectation_value(z62) for c in circuits]
        return [("<Z62> (stabilizer)", np.array(stabilizer, dtype=float))]
    if key == "chsh":
        from qiskit.primitives import StatevectorEstimator

        circuit, observables, thetas = tutorials.chsh()
        evs = np.asarray(StatevectorEstimator().run([(circuit, observables, thetas)]).result()[0].data.evs)
        return [("CHSH1 over 21 θ", evs[0]), ("CHSH2 over 21 θ", evs[1])]
    if key == "mirror":
        return [("<Z49>", np.ones(1))]
    return None


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    qubits: int
    run: Callable[[Runner], Values]


CASES = {
    c.key: c
    for c in [
        Case("ghz", "Hello world: GHZ, 99 x <Z0 Zi>, res. 1 + DD XY4", 100, ghz_case),
        Case(
            "qaoa",
            "QAOA part II: 1 layer, 100-node graph, one evaluation, res. 1 + DD + twirling, Session",
            100,
            qaoa_case,
        ),
        Case(
            "qaoa-generic",
            "QAOA part II: one evaluation at a generic point (2.1, 0.7), res. 1 + DD + twirling, Session",
            100,
            qaoa_generic_case,
        ),
        Case(
            "qaoa-cobyla",
            f"QAOA part II: COBYLA, {COBYLA_ITERATIONS} evaluations (jobs) in a Session",
            100,
            qaoa_cobyla_case,
        ),
        Case("ising1", "kicked Ising, 1 step, <Z62>, 4 θ, res. 1", 127, ising_case(1)),
        Case("ising2", "kicked Ising, 2 steps, <Z62>, 4 θ, res. 1", 127, ising_case(2)),
        Case("ising5", "kicked Ising, 5 steps, <Z62>, θ = 0, π/2 (Clifford), res. 1", 127, ising_case(5)),
        Case("chsh", "CHSH: 2 observables x 21 θ, default options", 2, chsh_case),
        Case(
            "mirror", "mirror circuit (efficient_su2), <Z49>, DD + TREX + twirling + ZNE, 100k shots", 50, mirror_case
        ),
    ]
}
DEFAULT = ["ghz", "qaoa", "qaoa-generic", "ising1", "ising2", "ising5", "chsh", "mirror"]
QUICK = ["ghz", "ising1", "chsh"]


@dataclass
class Outcome:
    """One method's run of one case: times (None unless it finished) or a reason, and values."""

    client: float | None = None
    server: float | None = None
    jobs: int = 0
    text: str = ""  # "fails (...)" or "> N s" when it did not finish
    values: Values | None = None
    predicted: float | None = None  # the server's predicted simulation seconds
    simulated: float | None = None  # the server's measured (billed) simulation seconds


def _reason(exc: BaseException) -> str:
    """``fails (...)`` with the gist of the error: the client's and Aer's boilerplate taken out."""
    text = " ".join(str(exc).split()).strip("'\"")
    text = re.sub(r"Unable to retrieve job result\. Error code \d+; Error in job execution: ", "", text)
    text = re.sub(r"ERROR: +(\[Experiment \d+\] )?", "", text)
    text = text.split(" , ", 1)[0].split(" [Experiment", 1)[0]
    text = re.sub(r"\[(\d+, ){4,}\d+\]", lambda m: f"[{m.group(0).count(',') + 1} qubits]", text)
    return f"fails ({type(exc).__name__}: {text[:200]})".replace("|", "/")


def run_case(key: str, runner: Runner, timeout: float) -> Outcome:
    try:
        values = CASES[key].run(runner)
    except TimedOut:
        return Outcome(text=f"> {timeout:.0f} s")
    except Exception as exc:
        return Outcome(text=_reason(exc))
    if runner.kind != "server":
        return Outcome(client=runner.client, jobs=runner.jobs, values=values)
    return Outcome(
        client=runner.client,
        server=runner.server,
        jobs=runner.jobs,
        values=values,
        predicted=runner.predicted,
        simulated=runner.simulated,
    )


# ---- baselines, each in a child process killed at the time limit ----


def _child(kind: str, key: str, timeout: float, queue: Any) -> None:
    warnings.filterwarnings("ignore")  # local testing mode warns about every option it ignores
    logging.disable(logging.CRITICAL)  # Aer logs its failures too; the parent prints the reason
    backend = fake_backend()
    # A plain dict: this module may be ``__main__`` here and ``__mp_main__`` in the child.
    queue.put(vars(run_case(key, Runner(kind, backend, timeout), timeout)))


def baseline(kind: str, key: str, timeout: float) -> Outcome:
    # spawn, not fork: this process runs qiskit's Rust thread pool (transpilation), and a forked
    # child that transpiles can deadlock on it.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(kind, key, timeout, queue))
    process.start()
    try:
        return Outcome(**queue.get(timeout=timeout + 30))  # + start-up (imports, backend), not timed
    except Exception:
        died = f"fails (died, exit code {process.exitcode})"
        return Outcome(text=f"> {timeout:.0f} s" if process.is_alive() else died)
    finally:
        if process.is_alive():
            process.kill()
        process.join()


# ---- the server side, the table ----


def _seconds(value: float | None, text: str) -> str:
    return f"{value:.2f} s" if value is not None else text


def _ratio(base: Outcome, server: Outcome) -> str:
    if base.client is None or server.client is None:
        return "-"
    return f"{base.client / server.client:.1f}x"


def _summary(evs: np.ndarray) -> str:
    flat = np.ravel(evs)
    if flat.size <= 6:
        return "[" + ", ".join(f"{v:.3f}" for v in flat) + "]"
    head = ", ".join(f"{v:.3f}" for v in flat[:3])
    return f"[{head}, ..., {flat[-1]:.3f}] ({flat.size} values, mean {flat.mean():.3f})"


def warm_up(service: Any) -> None:
    """One small job first: client imports, the server's simulation process and noise model."""
    from qiskit import QuantumCircuit
    from qiskit_ibm_runtime import EstimatorV2

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    backend = service.backend(BACKEND)
    isa, observable = tutorials.transpile(backend, qc, tutorials.kicked_ising_observable(2, 0))
    EstimatorV2(mode=backend).run([(isa, observable)]).result()


def run_all(keys: list[str], methods: list[str], timeout: float) -> tuple[list[str], list[str]]:
    from qiskit_ibm_runtime import QiskitRuntimeService

    rows, values = [], []
    service = QiskitRuntimeService() if "server" in methods else None
    if service is not None:
        warm_up(service)
    for key in keys:
        case = CASES[key]
        print(f"{key}: {case.title} ...", flush=True)
        outcomes: dict[str, Outcome] = {}
        for method in methods:
            if method == "server" and service is not None:
                runner = Runner("server", service.backend(BACKEND), timeout)
                outcomes[method] = run_case(key, runner, timeout)
            else:
                outcomes[method] = baseline(method, key, timeout)
            print(f"  {method}: {_seconds(outcomes[method].client, outcomes[method].text)}", flush=True)
        none = Outcome(text="not run")
        server, local, aer = (outcomes.get(m, none) for m in METHODS)
        jobs = f" ({server.jobs} jobs)" if server.jobs > 1 else ""
        rows.append(
            f"| {case.title}{jobs} | {case.qubits} | {_seconds(server.server, server.text)} | "
            f"{_seconds(server.client, '-' if server.text else 'not run')} | {_seconds(local.client, local.text)} | "
            f"{_seconds(aer.client, aer.text)} | {_ratio(local, server)} | {_ratio(aer, server)} |"
        )
        print(rows[-1], flush=True)
        produced = [(m, outcomes[m].values) for m in methods] + [("ideal", ideal(key))]
        parts = []
        for method, vals in produced:
            if vals:
                parts.append(f"{method}: " + "; ".join(f"{label} {_summary(v)}" for label, v in vals))
        if server.predicted is not None and server.simulated is not None:
            parts.append(f"server simulation: predicted {server.predicted:.2f} s, measured {server.simulated:.2f} s")
        values.append(f"- {key}: " + (" / ".join(parts) if parts else "no values"))
        print(values[-1], flush=True)
    return rows, values


def section(rows: list[str], values: list[str], elapsed: float, timeout: float) -> str:
    from bench.__main__ import machine, versions

    command = "python -m bench.utility " + " ".join(sys.argv[1:])
    return "\n".join(
        [
            SECTION,
            "",
            f"- command: `{command.strip()}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s)",
            f"- machine: {machine()}; the embedded server, the client and the baselines share it",
            f"- versions: {versions()}",
            f"- backend {BACKEND} (127 qubits); every method times its primitive calls only (run() to "
            "result; transpilation before); server time: `metrics()` finished - created, summed over "
            f"the case's jobs; ratios: local testing mode or bare Aer time / client time; limit {timeout:.0f} s "
            "per method and case (server jobs cancelled then)",
            "",
            "| case | qubits | server time | client time | local testing mode | bare Aer | local / client | "
            "Aer / client |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Values produced (first values, last, mean):",
            "",
            *values,
            "",
        ]
    )


def write(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else ""
    head, marker, tail = old.partition(SECTION)
    if marker:
        rest = tail.split("\n## ", 1)
        old = head + text + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        old = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(old)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.utility", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--cases", help=f"comma-separated, of {', '.join(CASES)} (default: {', '.join(DEFAULT)})")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--cobyla", action="store_true", help="also the QAOA COBYLA loop (qaoa-cobyla)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of server, local, aer")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per method and case")
    parser.add_argument("--write", action="store_true", help=f"replace the section '{SECTION}' of RESULTS.md")
    args = parser.parse_args(argv)
    keys = args.cases.split(",") if args.cases else list(QUICK if args.quick else DEFAULT)
    if args.cobyla and "qaoa-cobyla" not in keys:
        keys.append("qaoa-cobyla")
    methods = args.methods.split(",")
    unknown = [k for k in keys if k not in CASES] + [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    args.keys, args.method_list = keys, methods
    return args


@contextlib.contextmanager
def _server(needed: bool) -> Iterator[None]:
    if not needed:
        yield
        return
    from bench.servers import deployment

    with deployment(None, QRS_PRELOAD_BACKENDS=BACKEND) as dep:
        os.environ.update(dep.client_env())
        yield


def main() -> None:
    args = parse()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # EstimatorV2's, once per estimator
    started = time.time()
    # The client calls inspect.stack() on every request, slow under ``python -m`` (see cases.py).
    with _server("server" in args.method_list), concurrent.futures.ThreadPoolExecutor(1) as pool:
        rows, values = pool.submit(run_all, args.keys, args.method_list, args.timeout).result()
    text = section(rows, values, time.time() - started, args.timeout)
    print()
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
