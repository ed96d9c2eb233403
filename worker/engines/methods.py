"""How a group is simulated: the Aer method, its options and what it will cost.

The engine (``aer.py``) asks this module which method a group runs with, the options of that
run (device, threads, cuStateVec), how much memory it needs and how long it will take, before
it starts. Matrix product state sizes are estimated from the circuit that was sent, along a
qubit order chosen for it (:func:`mps_order`), not from the worst case.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from qiskit.circuit import QuantumCircuit
from qiskit_aer import AerSimulator

from qiskit_runtime_server.worker.engines.clifford import is_clifford

# Runs with less estimated work than this (amplitudes touched per instruction: 4**n for a
# density matrix, shots * 2**n for trajectories) use one OpenMP thread: threads only add
# start-up and spinning there (measured: a 2-qubit run is no faster with 2 threads, a 10-qubit
# 1000-shot trajectory run is 1.4x faster).
SINGLE_THREAD_WORK = 2**18
# A density-matrix run costs about 4**n per instruction, a trajectory run shots * 2**n, but one
# density-matrix amplitude costs less than one trajectory amplitude (no noise sampling, no
# per-shot restart): measured on fake_kolkata, 10 qubits/1000 shots took 2.3 s as a density
# matrix and 5.9 s as trajectories, 12 qubits/1000 shots 11.5 s and 8.1 s, i.e. a factor of
# about 2.6. Noisy runs use a density matrix when 4**n < DENSITY_MATRIX_ADVANTAGE * shots * 2**n
# (Aer's own rule is shots > 2**n, which picks trajectories for the 10-qubit case).
DENSITY_MATRIX_ADVANTAGE = 2.5
# Gate errors in Kraus form help density-matrix runs of few qubits (noisy Bell: 9 vs 14 ms) and
# stop paying at 10 qubits (2.29 vs 2.32 s); at 12 they cost more (13.0 vs 11.5 s).
KRAUS_MAX_QUBITS = 10
# On a GPU worker, statevector and density-matrix runs with at least this much work go to the
# GPU; smaller ones stay on the CPU, where they finish before a kernel launch pays off. Matrix
# product state and stabilizer runs always use the CPU (Aer has no GPU version of them).
GPU_MIN_WORK = 2**22
GPU_METHODS = frozenset({"automatic", "statevector", "density_matrix"})
# GPU runs at least this wide use cuStateVec (cuQuantum) when the installed qiskit-aer-gpu has it.
CUSTATEVEC_MIN_QUBITS = 20


@cache
def max_statevector_qubits(memory_limit_mb: int | None, device: str = "CPU") -> int:
    """The widest statevector (complex doubles, 16 bytes per amplitude) that fits the limit and
    what Aer reports for the device (host memory, or the GPU's memory)."""
    aer_limit = int(AerSimulator(device=device).configuration().n_qubits)
    if not memory_limit_mb:
        return aer_limit
    return max(1, min(aer_limit, int(math.log2(memory_limit_mb * 2**20 / 16))))


def choose_method(circuit: QuantumCircuit, *, noisy: bool, memory_limit_mb: int | None, device: str = "CPU") -> str:
    """Aer's own choice while a statevector fits in memory; beyond that, a method that scales.

    Aer's automatic choice is the one bare Aer makes for the same circuit (density matrix for
    noisy runs with more shots than amplitudes, statevector otherwise, stabilizer for Clifford
    circuits and noise). Wider than a statevector can hold: ideal Clifford circuits go to the
    stabilizer method (polynomial in qubits), anything else to matrix product states, which
    handle noise and low-entanglement circuits of hundreds of qubits.
    """
    if circuit.num_qubits <= max_statevector_qubits(memory_limit_mb, device):
        return "automatic"
    if not noisy and is_clifford(circuit):
        return "stabilizer"
    return "matrix_product_state"


# Two-qubit gates whose operator Schmidt rank is 2: each raises the Schmidt rank across a cut
# it straddles at most 2-fold (one bond bit); any other two-qubit gate at most 4-fold.
_RANK_TWO_GATES = frozenset({"cx", "cy", "cz", "ecr", "ch", "crx", "cry", "crz", "cp", "rzz", "rxx", "ryy", "rzx"})


def log_bonds(circuit: QuantumCircuit) -> np.ndarray:
    """Upper bounds on log2 of the Schmidt rank across each cut ``i | i+1`` of the qubit line
    (``num_qubits - 1`` values), counted from the circuit's own two-qubit gates in its order."""
    n = circuit.num_qubits
    straddling = np.zeros(max(n - 1, 0))
    for instruction in circuit.data:
        if len(instruction.qubits) == 2 and instruction.operation.name != "barrier":
            a, b = sorted(circuit.find_bit(q).index for q in instruction.qubits)
            straddling[a:b] += 1.0 if instruction.operation.name in _RANK_TWO_GATES else 2.0
    cuts = np.arange(1, n)
    bonds: np.ndarray = np.minimum(straddling, np.minimum(cuts, n - cuts))
    return bonds


def max_log_bond(circuit: QuantumCircuit) -> float:
    """log2 of the largest bond dimension a matrix product state of ``circuit`` can reach."""
    bonds = log_bonds(circuit)
    return float(bonds.max()) if bonds.size else 0.0


def mps_order(circuit: QuantumCircuit, qubits: list[int]) -> list[int]:
    """``qubits`` (indices in ``circuit``) in an order that keeps the cuts of a matrix product
    state small: reverse Cuthill-McKee on the graph of the two-qubit gates (a path along the
    coupling map for circuits laid out on a device), which keeps interacting qubits close."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    position = {q: i for i, q in enumerate(qubits)}
    rows: list[int] = []
    cols: list[int] = []
    for instruction in circuit.data:
        if len(instruction.qubits) == 2 and instruction.operation.name != "barrier":
            a, b = (position[circuit.find_bit(q).index] for q in instruction.qubits)
            rows += [a, b]
            cols += [b, a]
    if not rows:
        return list(qubits)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(qubits), len(qubits))).tocsr()
    order = reverse_cuthill_mckee(graph, symmetric_mode=True)
    return [qubits[int(i)] for i in order]


def estimate_memory(circuit: QuantumCircuit, method: str) -> float:
    """Bytes a run of ``circuit`` needs with ``method``, before running it.

    Statevector: 16 bytes per amplitude (Aer's automatic choice takes a density matrix only when
    it fits its memory limit, so a statevector is what it needs at least). Matrix product state:
    two complex matrices per site, sized by the bounds of :func:`log_bonds` on each side.
    Stabilizer: negligible.
    """
    n = circuit.num_qubits
    if method == "stabilizer":
        return float(n * n)
    if method != "matrix_product_state":
        return float(16.0 * 2.0**n)
    bond = np.concatenate([[0.0], log_bonds(circuit), [0.0]])
    return float(np.sum(32.0 * 2.0 ** (bond[:-1] + bond[1:])))


def samples_at_end(circuit: QuantumCircuit) -> bool:
    """Whether Aer can sample all shots from one final state: measurements only at the end of
    their qubits, no reset, no control flow (Aer's condition for a density-matrix run)."""
    measured: set[object] = set()
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name == "barrier":
            continue
        if operation.name == "reset" or getattr(operation, "blocks", ()):
            return False
        if operation.name == "measure":
            measured.update(instruction.qubits)
        elif measured.intersection(instruction.qubits):
            return False
    return True


def run_options(
    circuit: QuantumCircuit,
    *,
    noisy: bool,
    work: float,
    device: str,
    memory_limit_mb: int | None,
    custatevec: bool,
    density: bool = False,
) -> dict[str, object]:
    """Aer options for one run: method, device, threads (and cuStateVec on a GPU).

    ``work`` is the estimated amplitudes touched per instruction (``4**n`` for a density
    matrix, ``shots * 2**n`` for trajectories). Small runs use one OpenMP thread (see
    ``SINGLE_THREAD_WORK``), leaving the other cores to other workers; larger ones use all of
    them, as bare Aer does. On a GPU worker only statevector/density-matrix runs of at least
    ``GPU_MIN_WORK`` go to the GPU. ``density`` asks for a density matrix (see
    ``DENSITY_MATRIX_ADVANTAGE``); otherwise Aer's automatic choice or a method that scales.
    """
    if density:
        method = "density_matrix"
    else:
        method = choose_method(circuit, noisy=noisy, memory_limit_mb=memory_limit_mb, device=device)
    gpu = device == "GPU" and method in GPU_METHODS and work >= GPU_MIN_WORK
    options: dict[str, object] = {
        "method": method,
        "device": "GPU" if gpu else "CPU",
        "max_parallel_threads": 1 if work < SINGLE_THREAD_WORK else 0,
    }
    if device == "GPU":
        options["cuStateVec_enable"] = gpu and custatevec and circuit.num_qubits >= CUSTATEVEC_MIN_QUBITS
    return options


# Seconds per unit of work of each method, and per Aer call, measured with ``bench/calibrate.py``
# on the reference machine (2 cores): the unit is instructions x 4**n per binding for a density
# matrix, instructions x 2**n per shot for noisy statevector trajectories (per binding when
# ideal), instructions x n per shot for the stabilizer method, instructions per shot (times
# bond**3 / 8 past bond dimension 2) for matrix product states.
SECONDS_PER_UNIT = {
    "density_matrix": 3.5e-9,
    "statevector": 9.0e-9,
    "stabilizer": 8.0e-8,
    "stim": 1.0e-9,
    "matrix_product_state": 1.8e-5,
}
SECONDS_PER_RUN = 0.005
STIM_COMPILE_UNITS = 10_000


# Time of a sampled item outside the simulator runs: drawing its twirls (samplomatic), binding
# and splitting its circuits, converting its bits. Fitted on bench/utility.py's cases (CHSH,
# GHZ, kicked Ising, QAOA, mirror) once the samplex ran inline and builds were cached: a fixed
# cost per item with a samplex, plus a cost per bound instruction (bindings x instructions).
# A piece's first samplex build (about 0.2 s for a QAOA-100 piece) is not in it.
SECONDS_PER_SAMPLEX_ITEM = 0.05
SECONDS_PER_BOUND_INSTRUCTION = 4e-7


def predict_item_overhead(bindings: int, instructions: int, samplex: bool) -> float:
    """Predicted seconds a sampled executor item costs besides its simulator runs."""
    return (SECONDS_PER_SAMPLEX_ITEM if samplex else 0.0) + SECONDS_PER_BOUND_INSTRUCTION * bindings * instructions


def predict_noisy_seconds(num_qubits: int, size: int, shots: int, experiments: int) -> float:
    """Predicted wall time (s) of the faster of Aer's density matrix and noisy statevector for
    ``experiments`` runs of ``size`` instructions on ``num_qubits`` qubits, ``shots`` each."""
    units = min(
        4.0**num_qubits * SECONDS_PER_UNIT["density_matrix"], shots * 2.0**num_qubits * SECONDS_PER_UNIT["statevector"]
    )
    return float(SECONDS_PER_RUN * experiments + units * max(1, size) * experiments)


def predict_seconds(method: str, circuit: QuantumCircuit, shots: int, experiments: int, noisy: bool = True) -> float:
    """Predicted wall time (s) of one Aer run of ``circuit`` with ``method``.

    ``shots`` per experiment, ``experiments`` bound circuits (or parameter bindings). The work
    units are in :data:`SECONDS_PER_UNIT`; Aer's ``automatic`` is counted as a statevector.
    """
    n = circuit.num_qubits
    size = max(1, sum(1 for instruction in circuit.data if instruction.operation.name != "barrier"))
    if method == "density_matrix":
        units = size * 4.0**n * experiments
    elif method == "stim":
        # Translating and compiling each circuit, then Pauli frames for every shot; the unit is
        # instructions x shots, plus STIM_COMPILE_UNITS per instruction of each circuit.
        units = size * (shots + STIM_COMPILE_UNITS) * experiments
    elif method == "stabilizer":
        # Without noise Aer simulates once per circuit and samples the shots.
        units = size * n * (shots if noisy else 1) * experiments
    elif method == "matrix_product_state":
        # Per gate and shot: a fixed cost (measured 18 us at bond dimension 2) that grows with
        # the cube of the bond dimension once that dominates.
        bond = 2.0 ** max_log_bond(circuit)
        units = size * max(1.0, bond**3 / 8.0) * (shots if noisy else 1) * experiments
    else:
        method = "statevector"
        units = size * 2.0**n * (shots if noisy else 1) * experiments
    return float(SECONDS_PER_RUN * experiments + SECONDS_PER_UNIT[method] * units)
