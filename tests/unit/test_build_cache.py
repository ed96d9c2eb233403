"""A loop's jobs reuse their pieces' samplex builds and qubit-reuse schedules, and get the very
results fresh builds give (worker/programs/build_cache.py, worker/engines/circuit_key.py)."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import PrimitiveResult
from qiskit.quantum_info import SparsePauliOp

from qiskit_runtime_server.worker.engines.aer import AerEngine
from qiskit_runtime_server.worker.engines.circuit_key import fingerprint
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs import build_cache
from qiskit_runtime_server.worker.programs.primitives import run_estimator

SHERBROOKE = "fake_sherbrooke"
# Twelve couplings in a row of fake_sherbrooke.
CHAIN = [108, 112, 126, 125, 124, 123, 122, 121, 120, 119, 118, 110]


def staircase(theta: Parameter) -> QuantumCircuit:
    """A 12-qubit cone (Z on the last qubit sees every gate) that runs on few reused wires:
    each qubit is rotated, entangled with the next one and then never touched again."""
    qc = QuantumCircuit(127)
    for i, q in enumerate(CHAIN):
        qc.sx(q)
        qc.rz(theta * (0.7 + 0.1 * i), q)
        qc.sx(q)
        if i:
            qc.ecr(CHAIN[i - 1], q) if (CHAIN[i - 1], q) in _ecr() else qc.ecr(q, CHAIN[i - 1])
    return qc


def _ecr() -> set[tuple[int, int]]:
    from qiskit_runtime_server.worker.engines.aer import fake_backend

    return set(fake_backend(SHERBROOKE).target["ecr"])


THETA = Parameter("theta")  # a loop sends one circuit: its parameters keep their identity


def job(values: list[float], seed: int, theta: Parameter = THETA) -> dict[str, object]:
    observables = [SparsePauliOp.from_sparse_list([("Z", [CHAIN[-1]], 1.0)], 127),
                   SparsePauliOp.from_sparse_list([("Z", [CHAIN[5]], 1.0)], 127)]  # fmt: skip
    options = {"simulator": {"seed_simulator": seed}, "twirling": {"enable_gates": True, "num_randomizations": 8}}
    pub = (staircase(theta), observables, np.array(values)[:, None, None])  # bindings (2, 1) x observables (2,)
    return {"pubs": [pub], "options": options, "resilience_level": 1, "version": 2, "support_qiskit": True}


def evs(engine: AerEngine, values: list[float], seed: int, theta: Parameter = THETA) -> tuple[np.ndarray, np.ndarray]:
    result = run_estimator(job(values, seed, theta), SHERBROOKE, engine, Defaults()).result
    assert isinstance(result, PrimitiveResult)
    return np.asarray(result[0].data.evs), np.asarray(result[0].data.stds)


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    build_cache.clear()


def test_second_job_of_a_loop_reuses_the_builds_and_gives_what_fresh_builds_give() -> None:
    engine = AerEngine()
    evs(engine, [0.4, 1.1], seed=3)
    builds, groups, boxed = build_cache.size(), engine.cached_groups, build_cache.boxed_size()
    assert builds > 0 and groups > 0 and boxed > 0  # the 12-qubit cone ran on reused wires
    cached = evs(engine, [0.9, 2.0], seed=5)
    # Nothing new was boxed or built.
    assert (build_cache.size(), engine.cached_groups, build_cache.boxed_size()) == (builds, groups, boxed)

    build_cache.clear()
    fresh = evs(AerEngine(), [0.9, 2.0], seed=5)
    assert build_cache.size() == builds
    np.testing.assert_array_equal(cached[0], fresh[0])
    np.testing.assert_array_equal(cached[1], fresh[1])
    other_seed = evs(AerEngine(), [0.9, 2.0], seed=6)
    assert not np.array_equal(other_seed[0], fresh[0])  # the equality above is not trivial
    assert np.ptp(fresh[0][:, 0]) > 0.3  # the two bindings differ


def test_a_circuit_with_new_parameter_objects_is_boxed_again_with_the_same_results() -> None:
    """The boxed circuit carries the circuit's parameter objects, so a circuit whose parameters
    are new objects (same names) is boxed afresh; the builds are still shared, and the values
    are those of a fresh process."""
    engine = AerEngine()
    first = evs(engine, [0.9, 2.0], seed=5)
    boxed, builds = build_cache.boxed_size(), build_cache.size()
    again = evs(engine, [0.9, 2.0], seed=5, theta=Parameter("theta"))
    assert build_cache.boxed_size() > boxed and build_cache.size() == builds
    np.testing.assert_array_equal(first[0], again[0])


def test_circuit_keys_follow_structure_not_objects() -> None:
    a, b = staircase(Parameter("theta")), staircase(Parameter("theta"))
    assert fingerprint(a) == fingerprint(b) is not None  # new Parameter objects, same names
    assert fingerprint(staircase(Parameter("phi"))) != fingerprint(a)
    moved = staircase(Parameter("theta"))
    moved.rz(0.1, CHAIN[0])
    assert fingerprint(moved) != fingerprint(a)
    angle = staircase(Parameter("theta"))
    angle.rz(0.2, CHAIN[0])
    assert fingerprint(angle) != fingerprint(moved)
    dynamic = QuantumCircuit(1, 1)
    dynamic.measure(0, 0)
    with dynamic.if_test((dynamic.clbits[0], 1)):
        dynamic.x(0)
    assert fingerprint(dynamic) is None
