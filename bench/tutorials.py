"""Circuits and observables of IBM's utility-scale tutorials, for ``bench/utility.py`` and tests.

Each builder returns the abstract (virtual) circuit and observables; :func:`transpile` maps them to
a backend as the tutorials do (``generate_preset_pass_manager(optimization_level=1)``, then
``observable.apply_layout(isa.layout)``).

* :func:`ghz` and :func:`ghz_observables`: "Hello world" part 2 (a 100-qubit GHZ state, ``Z0 Zi``).
* :func:`qaoa_graph`, :func:`maxcut_hamiltonian` and :func:`qaoa_circuit`: the QAOA tutorial's part
  II (a 100-node graph made of the device's couplings between its first 100 qubits, one layer).
* :func:`kicked_ising`: the kicked Ising circuit of Kim et al., Nature 618, 500 (2023): each
  Trotter step is RX(θ) on every qubit, then RZZ(-π/2) on every coupling, in 3 layers.
* :func:`chsh`: the CHSH tutorial's Bell circuit with ``ry(θ)`` and its two CHSH observables.
* :func:`mirror_su2`: the 50-qubit mirror circuit of the "Combine error mitigation options"
  tutorial (``efficient_su2`` with random angles, a barrier, then its inverse).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

Edge = tuple[int, int]


def transpile(backend: Any, circuit: QuantumCircuit, observables: Any, seed: int = 7) -> tuple[QuantumCircuit, Any]:
    """The ISA circuit for ``backend`` and the observables (nested lists kept) with its layout applied."""
    from qiskit.transpiler import generate_preset_pass_manager

    isa = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=seed).run(circuit)

    def apply(obs: Any) -> Any:
        return [apply(o) for o in obs] if isinstance(obs, list) else obs.apply_layout(isa.layout)

    return isa, apply(observables)


# ---- Hello world, part 2 ----


def ghz(n: int) -> QuantumCircuit:
    """``get_qc_for_n_qubit_GHZ_state(n)``: H on qubit 0, then a CX chain 0-1, 1-2, ..."""
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    return qc


def ghz_observables(n: int) -> list[SparsePauliOp]:
    """``Z0 Zi`` for i = 1 .. n-1 (n-1 observables; ideal value 1 each)."""
    return [SparsePauliOp.from_sparse_list([("ZZ", [0, i], 1.0)], num_qubits=n) for i in range(1, n)]


# ---- QAOA, part II ----


def coupling_edges(backend: Any) -> list[Edge]:
    """The backend's couplings as undirected edges ``(low, high)``, each once, sorted."""
    return sorted({(min(a, b), max(a, b)) for a, b in backend.coupling_map.get_edges()})


def qaoa_graph(backend: Any, n: int = 100) -> list[Edge]:
    """The tutorial's graph: the couplings whose two qubits are both below ``n``."""
    return [(a, b) for a, b in coupling_edges(backend) if b < n]


def maxcut_hamiltonian(n: int, edges: Sequence[Edge]) -> SparsePauliOp:
    """Σ Zi Zj over the edges (unit weights), as the tutorial's ``build_max_cut_paulis``."""
    return SparsePauliOp.from_sparse_list([("ZZ", [a, b], 1.0) for a, b in edges], num_qubits=n)


def qaoa_circuit(cost: SparsePauliOp, reps: int = 1) -> QuantumCircuit:
    """``QAOAAnsatz(cost, reps)`` with parameters beta[0], gamma[0] (no measurements: Estimator only)."""
    from qiskit.circuit.library import QAOAAnsatz

    return QAOAAnsatz(cost, reps=reps)


# The tutorial's starting point: init_params = [π, π/2], in the circuit's parameter order.
QAOA_INITIAL = (np.pi, np.pi / 2)


# ---- Kicked Ising (Kim et al. 2023) ----


def edge_layers(edges: Sequence[Edge]) -> list[list[Edge]]:
    """Edges split into layers of disjoint edges (3 on a heavy-hex lattice: it is bipartite with
    degree <= 3), by rustworkx's bipartite edge colouring, greedy if the graph is not bipartite."""
    import rustworkx as rx

    nodes = sorted({q for e in edges for q in e})
    index = {q: i for i, q in enumerate(nodes)}
    graph = rx.PyGraph()
    graph.add_nodes_from(nodes)
    edge_ids = [graph.add_edge(index[a], index[b], None) for a, b in edges]
    try:
        colours = dict(rx.graph_bipartite_edge_color(graph))
    except rx.GraphNotBipartite:
        colours = dict(rx.graph_greedy_edge_color(graph))
    layers: dict[int, list[Edge]] = {}
    for edge, eid in zip(edges, edge_ids, strict=True):
        layers.setdefault(colours[eid], []).append(edge)
    return [layers[c] for c in sorted(layers)]


def kicked_ising(num_qubits: int, edges: Sequence[Edge], steps: int, theta: Parameter | float) -> QuantumCircuit:
    """``steps`` Trotter steps: RX(θ) on every qubit, then RZZ(-π/2) on every edge by layers."""
    layers = edge_layers(edges)
    qc = QuantumCircuit(num_qubits)
    for _ in range(steps):
        qc.rx(theta, range(num_qubits))
        for layer in layers:
            for a, b in layer:
                qc.rzz(-np.pi / 2, a, b)
    return qc


KICKED_ISING_QUBIT = 62  # the observable Z62 of the paper's Fig. 3 (a central qubit of the device)


def kicked_ising_observable(num_qubits: int, qubit: int = KICKED_ISING_QUBIT) -> SparsePauliOp:
    return SparsePauliOp.from_sparse_list([("Z", [qubit], 1.0)], num_qubits=num_qubits)


# ---- CHSH ----


def chsh() -> tuple[QuantumCircuit, list[list[SparsePauliOp]], np.ndarray]:
    """The tutorial's PUB parts: Bell circuit + ``ry(θ)`` on qubit 0, observables
    ``[[ZZ - ZX + XZ + XX], [ZZ + ZX - XZ + XX]]`` and 21 θ values in [0, 2π] (shape (21, 1))."""
    theta = Parameter("θ")
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.ry(theta, 0)
    zz, zx, xz, xx = (SparsePauliOp(label) for label in ("ZZ", "ZX", "XZ", "XX"))
    observables = [[zz - zx + xz + xx], [zz + zx - xz + xx]]
    return qc, observables, np.linspace(0, 2 * np.pi, 21)[:, None]


# ---- Mirror circuit of the error-mitigation tutorial ----


def mirror_su2(n: int = 50, seed: int = 1234) -> tuple[QuantumCircuit, SparsePauliOp]:
    """``efficient_su2(n, entanglement="pairwise", reps=1)`` with random angles, a barrier, then
    the inverse (``unitary_overlap``); observable Z on the last qubit (ideal value 1)."""
    from qiskit.circuit.library import efficient_su2, unitary_overlap

    circuit = efficient_su2(n, entanglement="pairwise", reps=1)
    params = np.random.default_rng(seed).uniform(-np.pi, np.pi, size=circuit.num_parameters)
    assigned = circuit.assign_parameters(params)
    assigned.barrier()
    mirror = unitary_overlap(assigned, assigned)
    return mirror, SparsePauliOp.from_sparse_list([("Z", [n - 1], 1.0)], num_qubits=n)
