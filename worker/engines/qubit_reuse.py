"""Run a wide but shallow-in-time group on few wires: trace out each qubit after its last gate.

A light cone is wide early and narrow late: in a kicked Ising ``Z62`` after two steps, 16 qubits
take part, but no more than 6 are ever between their first and last gate at once. Scheduling the
group's gates in a dependency-respecting order that starts a qubit as late and ends it as early
as possible (:func:`schedule`), a qubit that has had its last gate, and is not measured, is
traced out and its wire handed to the next qubit to start, after a reset. A reset is exactly
"trace out, then prepare ``|0>``": ``R(rho) = Tr_q(rho) (x) |0><0|``, and the new qubit starts in
``|0>``, so the reduced state of the qubits still in play, and the law of every measured bit, is
unchanged. The group then runs as a density matrix on the wires (``4^wires``, not ``4^qubits``).

Because a wire carries several physical qubits in turn, the noise model cannot be keyed by wire:
each instruction's error (the backend's error for that gate on those physical qubits) is put in
the circuit right after it as an explicit instruction, and the synthetic resets carry none.
Readout errors stay in a noise model: measured qubits keep their wire to the end.

Only groups whose measurements all come last on their qubits, with no control flow and no delay
(whose relaxation noise a custom pass would add), are scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass

from qiskit.circuit import CircuitInstruction, QuantumCircuit, QuantumRegister, Reset
from qiskit.converters import circuit_to_dag
from qiskit.dagcircuit import DAGOpNode
from qiskit_aer.noise import NoiseModel

_NOT_SCHEDULED = frozenset({"barrier"})


@dataclass(frozen=True)
class Schedule:
    """Gates of a group in a valid order, each qubit's wire, and how many wires are used."""

    order: tuple[CircuitInstruction, ...]
    wire: dict[int, int]
    starts: frozenset[int]
    width: int


def schedule(circuit: QuantumCircuit) -> Schedule | None:
    """A greedy order of ``circuit``'s instructions that keeps few qubits live at once.

    Among the instructions whose predecessors are done, it takes the one that starts the fewest
    new qubits and ends the most. Returns ``None`` for circuits this does not cover (control
    flow, delays, a measurement followed by anything on its qubit).
    """
    measured: set[int] = set()
    for instruction in circuit.data:
        name = instruction.operation.name
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        if getattr(instruction.operation, "blocks", ()) or name == "delay":
            return None
        if name == "measure":
            measured.update(qubits)
        elif name not in _NOT_SCHEDULED and measured.intersection(qubits):
            return None
    dag = circuit_to_dag(circuit)
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    nodes = [node for node in dag.topological_op_nodes() if node.op.name not in _NOT_SCHEDULED]
    remaining = dict.fromkeys(range(circuit.num_qubits), 0)
    for node in nodes:
        for q in node.qargs:
            remaining[index[q]] += 1
    waiting = {node: sum(1 for p in dag.op_predecessors(node) if p.op.name not in _NOT_SCHEDULED) for node in nodes}
    ready: list[DAGOpNode] = [node for node in nodes if waiting[node] == 0]
    live: set[int] = set()
    free: list[int] = []
    wire: dict[int, int] = {}
    reused: set[int] = set()
    width = 0
    order: list[CircuitInstruction] = []
    while ready:

        def cost(node: DAGOpNode) -> tuple[int, int]:
            qubits = {index[q] for q in node.qargs}
            return len(qubits - live), -sum(1 for q in qubits if remaining[q] == 1)

        node = min(ready, key=cost)
        ready.remove(node)
        qubits = [index[q] for q in node.qargs]
        for q in qubits:
            if q not in wire:
                if free:
                    wire[q] = free.pop()
                    reused.add(q)
                else:
                    wire[q] = width
                    width += 1
                live.add(q)
        order.append(CircuitInstruction(node.op, node.qargs, node.cargs))
        for q in qubits:
            remaining[q] -= 1
            if remaining[q] == 0 and q not in measured:
                live.discard(q)
                free.append(wire[q])
        for successor in dag.op_successors(node):
            if successor.op.name in _NOT_SCHEDULED:
                continue
            waiting[successor] -= 1
            if waiting[successor] == 0:
                ready.append(successor)
    return Schedule(tuple(order), wire, frozenset(reused), width)


def on_wires(circuit: QuantumCircuit, plan: Schedule, noise: NoiseModel) -> tuple[QuantumCircuit, NoiseModel]:
    """``circuit`` on ``plan.width`` wires with its errors explicit, and the readout-only model.

    ``noise`` is the group's noise model in ``circuit``'s numbering (compacted), as
    :func:`~worker.engines.compaction.reduce_noise_model` builds it.
    """
    local = noise._local_quantum_errors
    default = noise._default_quantum_errors
    wires = QuantumRegister(plan.width, "w")
    out = QuantumCircuit(wires, name=circuit.name, global_phase=circuit.global_phase)
    out.add_bits(list(circuit.clbits))
    for register in circuit.cregs:
        out.add_register(register)
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    measured = {
        index[q] for instruction in plan.order if instruction.operation.name == "measure" for q in instruction.qubits
    }
    started: set[int] = set()
    for instruction in plan.order:
        qubits = tuple(index[q] for q in instruction.qubits)
        for q in qubits:
            if q not in started:
                started.add(q)
                if q in plan.starts:
                    out._append(CircuitInstruction(Reset(), (wires[plan.wire[q]],), ()))
        targets = tuple(wires[plan.wire[q]] for q in qubits)
        out._append(CircuitInstruction(instruction.operation, targets, instruction.clbits))
        name = instruction.operation.name
        error = local.get(name, {}).get(qubits) or default.get(name)
        if error is not None:
            out.append(error, targets)
    readout = NoiseModel(basis_gates=noise.basis_gates)
    for qubits, error in noise._local_readout_errors.items():
        if all(q in measured for q in qubits):
            readout.add_readout_error(error, [plan.wire[q] for q in qubits], warnings=False)
    if noise._default_readout_error is not None and measured:
        readout.add_all_qubit_readout_error(noise._default_readout_error, warnings=False)
    return out, readout
