"""Which device class runs a decoded job best: ``gpu`` for wide statevector/density-matrix work.

Runs in the simulation process, where the circuits are decoded (``shared/routing.py`` says
who asks and what is done with the answer). The thresholds are the GPU worker's own
(``worker/engines/aer.py``): a group of interacting qubits goes to the GPU there when its
method is statevector or density matrix and its work is at least ``GPU_MIN_WORK`` (2^22
amplitudes touched per instruction). So a job is GPU-class when one PUB has a group of ``n``
interacting qubits (lone qubits are sampled with numpy) that

* fits a statevector within the job memory limit (wider groups run as matrix product states
  or stabilizer, which Aer has only on the CPU),
* is not a Clifford circuit (Aer takes the stabilizer route for those), and
* has work ``min(4^n, shots * bindings * 2^n)`` of at least ``GPU_MIN_WORK`` (the cheaper of a
  density matrix and trajectories, as ``AerEngine.run_group`` chooses).

Sampler and estimator jobs are classified; executor and noise-learner jobs are CPU-class (the
noise learner simulates nothing; executor items are not inspected yet).
"""

from __future__ import annotations

import math
from typing import Any

from qiskit.circuit import QuantumCircuit

from qiskit_runtime_server.worker.engines.clifford import is_clifford
from qiskit_runtime_server.worker.engines.compaction import compact_circuit
from qiskit_runtime_server.worker.engines.factorized import whole_circuit
from qiskit_runtime_server.worker.engines.methods import GPU_MIN_WORK, max_statevector_qubits
from qiskit_runtime_server.worker.engines.partition import independent_components
from qiskit_runtime_server.worker.jobspec import Defaults

CLASSIFIED_PROGRAMS = frozenset({"sampler", "estimator"})


def _bindings(values: Any) -> int:
    """Parameter bindings of a PUB's values (``None``/empty: one)."""
    shape = getattr(values, "shape", None)
    if shape is None or len(shape) == 0:
        return 1
    return max(1, int(math.prod(shape[:-1])))


def job_device_class(
    program_id: str, params: dict[str, Any], defaults: Defaults, memory_limit_mb: int | None
) -> tuple[str, str]:
    """``("gpu", why)`` or ``("cpu", why)`` for a decoded job; ``why`` is one line for the job log."""
    if program_id not in CLASSIFIED_PROGRAMS:
        return "cpu", f"program {program_id} runs on CPU workers"
    options = params.get("options") or {}
    shots = int(options.get("default_shots") or defaults.shots) if isinstance(options, dict) else defaults.shots
    widest_sv = max_statevector_qubits(memory_limit_mb)
    for index, item in enumerate(params.get("pubs") or []):
        pub = item if isinstance(item, list | tuple) else [item]
        circuit = pub[0]
        if not isinstance(circuit, QuantumCircuit):
            continue
        if program_id == "sampler":  # (circuit, values, shots)
            values = pub[1] if len(pub) > 1 else None
            pub_shots = pub[2] if len(pub) > 2 and isinstance(pub[2], int) else shots
        else:  # estimator (circuit, observables, values, precision): shots per basis from the precision
            values = pub[2] if len(pub) > 2 else None
            precision = pub[3] if len(pub) > 3 and isinstance(pub[3], float) else defaults.precision
            pub_shots = math.ceil(1 / precision**2)
        experiment = pub_shots * _bindings(values)
        for group in independent_components(circuit) or [whole_circuit(circuit)]:
            width = len(group.qubits)
            if width < 2 or width > widest_sv:
                continue
            work = min(4.0**width, experiment * 2.0**width)
            if work < GPU_MIN_WORK:
                continue
            if is_clifford(compact_circuit(circuit, list(group.qubits), others="drop")):
                continue
            return "gpu", (
                f"PUB {index} has a group of {width} interacting qubits, {work:.3g} units of work "
                f"(GPU threshold 2^{int(math.log2(GPU_MIN_WORK))})"
            )
    return "cpu", f"no group reaches the GPU threshold of 2^{int(math.log2(GPU_MIN_WORK))} units of work"
