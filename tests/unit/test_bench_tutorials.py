"""The circuit builders of bench/tutorials.py: shapes, and the ideal values that are cheap to check."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp, Statevector

from bench import tutorials


@pytest.fixture(scope="module")
def sherbrooke():  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

    return FakeSherbrooke()


def test_ghz_shapes() -> None:
    qc = tutorials.ghz(100)
    assert qc.num_qubits == 100
    assert qc.count_ops() == {"h": 1, "cx": 99}
    observables = tutorials.ghz_observables(100)
    assert len(observables) == 99
    assert observables[0] == SparsePauliOp.from_sparse_list([("ZZ", [0, 1], 1)], 100)
    assert observables[-1] == SparsePauliOp.from_sparse_list([("ZZ", [0, 99], 1)], 100)


def test_ghz_small_is_ideal() -> None:
    state = Statevector(tutorials.ghz(5))
    assert [state.expectation_value(o).real for o in tutorials.ghz_observables(5)] == pytest.approx([1.0] * 4)


def test_qaoa_graph_is_connected_100_nodes(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    import rustworkx as rx

    edges = tutorials.qaoa_graph(sherbrooke)
    graph = rx.PyGraph()
    graph.add_nodes_from(range(100))
    graph.add_edges_from_no_data(edges)
    assert {q for e in edges for q in e} == set(range(100))
    assert rx.is_connected(graph)
    assert len(set(edges)) == len(edges)
    cost = tutorials.maxcut_hamiltonian(100, edges)
    assert cost.num_qubits == 100
    assert len(cost) == len(edges)
    ansatz = tutorials.qaoa_circuit(cost)
    assert ansatz.num_qubits == 100
    assert ansatz.num_parameters == 2


def test_edge_layers_colour_the_heavy_hex(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    edges = tutorials.coupling_edges(sherbrooke)
    layers = tutorials.edge_layers(edges)
    assert len(layers) == 3
    assert sorted(e for layer in layers for e in layer) == edges
    for layer in layers:
        qubits = [q for e in layer for q in e]
        assert len(qubits) == len(set(qubits))


def test_kicked_ising_shape(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    edges = tutorials.coupling_edges(sherbrooke)
    qc = tutorials.kicked_ising(127, edges, 2, Parameter("θ"))
    assert qc.num_qubits == 127
    assert qc.count_ops() == {"rx": 2 * 127, "rzz": 2 * len(edges)}
    assert qc.num_parameters == 1


def _light_cone(edges: list[tuple[int, int]], qubit: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Qubit and its neighbours renumbered: their count, the qubit's new index, the edges among them."""
    keep = sorted({qubit} | {b if a == qubit else a for a, b in edges if qubit in (a, b)})
    index = {q: i for i, q in enumerate(keep)}
    return len(keep), index[qubit], [(index[a], index[b]) for a, b in edges if a in index and b in index]


@pytest.mark.parametrize("theta", [0.0, np.pi / 8, np.pi / 4, np.pi / 2, 2.0])
def test_kicked_ising_one_step_is_cos_theta(sherbrooke, theta: float) -> None:  # type: ignore[no-untyped-def]
    """One step: the RZZ layer commutes with Z, so <Z62> = cos θ; checked on Z62's light cone."""
    edges = tutorials.coupling_edges(sherbrooke)
    n, centre, local_edges = _light_cone(edges, tutorials.KICKED_ISING_QUBIT)
    assert n in (3, 4)  # qubit 62 and its neighbours on the heavy hex
    qc = tutorials.kicked_ising(n, local_edges, 1, theta)
    value = Statevector(qc).expectation_value(tutorials.kicked_ising_observable(n, centre)).real
    assert value == pytest.approx(np.cos(theta))


def test_chsh_pub_shapes() -> None:
    qc, observables, thetas = tutorials.chsh()
    assert qc.num_qubits == 2
    assert qc.num_parameters == 1
    assert [len(row) for row in observables] == [1, 1]
    assert thetas.shape == (21, 1)
    assert thetas[0, 0] == 0 and thetas[-1, 0] == pytest.approx(2 * np.pi)
    # Maximal violation: CHSH2 = 2√2 at θ = π/4, CHSH1 = -2√2 at θ = 3π/4.
    for theta, row, value in ((np.pi / 4, 1, 2 * np.sqrt(2)), (3 * np.pi / 4, 0, -2 * np.sqrt(2))):
        state = Statevector(qc.assign_parameters([theta]))
        assert state.expectation_value(observables[row][0]).real == pytest.approx(value)


def test_mirror_is_identity() -> None:
    circuit, observable = tutorials.mirror_su2(6)
    assert circuit.num_qubits == 6
    assert circuit.num_parameters == 0
    assert Statevector(circuit).expectation_value(observable).real == pytest.approx(1.0)
    big, big_observable = tutorials.mirror_su2(50)
    assert big.num_qubits == 50 and big_observable.num_qubits == 50


def test_transpile_applies_the_layout(sherbrooke) -> None:  # type: ignore[no-untyped-def]
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    observables = [[SparsePauliOp("ZZ")], [SparsePauliOp("XI")]]
    isa, mapped = tutorials.transpile(sherbrooke, qc, observables)
    assert isa.num_qubits == 127
    assert [len(row) for row in mapped] == [1, 1]
    assert all(o.num_qubits == 127 for row in mapped for o in row)
    physical = isa.layout.final_index_layout()
    assert mapped[1][0] == SparsePauliOp.from_sparse_list([("X", [physical[1]], 1)], 127)
