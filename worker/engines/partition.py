"""Split a circuit into groups of qubits that never interact, so each group runs on its own.

An ISA circuit for a 127- or 156-qubit device, and above all the executor Estimator's items
(which measure every qubit of the device for measurement-noise learning), is mostly qubits that
never meet: a lone qubit with a few single-qubit gates and a measurement. Two qubits belong to
one group when an instruction acts on both (a two-qubit gate, a control-flow block), or when
they share a classical bit (one writes what the other reads in a condition, or both write it).
Simulating each group alone and concatenating their per-shot outcomes is exact in law when the
noise of every instruction acts only on that instruction's qubits (:func:`noise_is_local`), as
it does in ``NoiseModel.from_backend`` models.
"""

from __future__ import annotations

from dataclasses import dataclass

from qiskit.circuit import QuantumCircuit
from qiskit_aer.noise import NoiseModel
from qiskit_aer.noise.passes import RelaxationNoisePass

_NOT_CONNECTING = frozenset({"barrier"})


@dataclass(frozen=True)
class Component:
    """One independent group: its qubit and classical-bit indices in the circuit, ascending.

    ``control_flow`` tells whether any instruction of the group is a control-flow block.
    """

    qubits: tuple[int, ...]
    clbits: tuple[int, ...]
    control_flow: bool


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, items: list[int]) -> None:
        if len(items) < 2:
            return
        root = self.find(items[0])
        for item in items[1:]:
            other = self.find(item)
            if other != root:
                self.parent[other] = root


def independent_components(circuit: QuantumCircuit) -> list[Component] | None:
    """The circuit's independent groups, in order of their lowest qubit.

    Only qubits that some instruction other than a barrier acts on appear; a classical bit no
    instruction touches appears in no group (it reads 0). ``None`` when the circuit holds
    classical variables (``Var``/``Store``), whose data flow this function does not follow: the
    caller then treats all active qubits as one group.
    """
    if circuit.num_vars or circuit.num_stretches:
        return None
    num_qubits = circuit.num_qubits
    # Nodes 0..n-1 are qubits, n.. are classical bits.
    groups = _UnionFind(num_qubits + circuit.num_clbits)
    active: set[int] = set()
    flow_nodes: set[int] = set()
    for instruction in circuit.data:
        if instruction.operation.name in _NOT_CONNECTING:
            continue
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        nodes = qubits + [num_qubits + circuit.find_bit(c).index for c in instruction.clbits]
        active.update(qubits)
        groups.union(nodes)
        if getattr(instruction.operation, "blocks", ()):
            flow_nodes.update(nodes)
    members: dict[int, tuple[list[int], list[int]]] = {}
    for qubit in sorted(active):
        members.setdefault(groups.find(qubit), ([], []))[0].append(qubit)
    for clbit in range(circuit.num_clbits):
        group = members.get(groups.find(num_qubits + clbit))
        if group is not None:
            group[1].append(clbit)
    flow_roots = {groups.find(node) for node in flow_nodes}
    return [Component(tuple(qubits), tuple(clbits), root in flow_roots) for root, (qubits, clbits) in members.items()]


def noise_is_local(model: NoiseModel | None) -> bool:
    """Whether every error of ``model`` acts only on the qubits of the instruction it follows.

    True for no model, for quantum and readout errors (local or all-qubit: both are applied to
    the instruction's own qubits) and for qiskit-aer's ``RelaxationNoisePass`` (per qubit). Any
    other custom noise pass could add errors anywhere, so it makes the model non-local.
    """
    if model is None:
        return True
    passes = getattr(model, "_custom_noise_passes", None)
    if passes is None:
        return False
    return all(isinstance(noise_pass, RelaxationNoisePass) for noise_pass in passes)
