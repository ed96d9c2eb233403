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

from qiskit_runtime_server.worker.engines.compaction import ErrorTable

_NOT_SCHEDULED = frozenset({"barrier"})


@dataclass(frozen=True)
class Schedule:
    """Gates of a group in a valid order, each qubit's wire, and how many wires are used."""

    order: tuple[CircuitInstruction, ...]
    wire: dict[int, int]
    starts: frozenset[int]
    width: int


def schedule(circuit: QuantumCircuit, max_width: int | None = None) -> Schedule | None:
    """An order of ``circuit``'s instructions that keeps few qubits live at once.

    Gates on live qubits only never widen the state, so they run as soon as they are ready; the
    choices are which gate starts new qubits next. Each choice is made by looking ahead
    (:data:`LOOKAHEAD` choices deep, while the search stays small): the one whose continuation
    peaks at the fewest live qubits, then leaves the fewest live. Returns ``None`` for circuits
    this does not cover (control flow, delays, a measurement followed by anything on its qubit)
    or, with ``max_width``, when no order found fits that many wires.
    """
    measured: set[int] = set()
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    for instruction in circuit.data:
        name = instruction.name
        qubits = [index[q] for q in instruction.qubits]
        if name in _CONTROL_FLOW or name == "delay" or getattr(instruction.operation, "blocks", ()):
            return None
        if name == "measure":
            measured.update(qubits)
        elif name not in _NOT_SCHEDULED and measured.intersection(qubits):
            return None
    if max_width is not None and len(measured) > max_width:
        return None  # measured qubits keep their wires to the end
    search = _Search(circuit, measured)
    best: list[DAGOpNode] | None = None
    best_width = 0
    for depth in range(1, LOOKAHEAD + 1):
        if depth > 1 and search.nodes_count * search.qubits_count**depth > LOOKAHEAD_WORK:
            break
        if depth > 1 and best_width <= SMALL_ENOUGH:
            break  # a density matrix this narrow costs less than a deeper search
        order, width = search.run(depth)
        if best is None or width < best_width:
            best, best_width = order, width
        if max_width is not None and best_width > max_width + 2:
            return None  # deeper search saves a wire or two, not more
    assert best is not None
    if max_width is not None and best_width > max_width:
        return None
    return _assign_wires(best, index, measured)


# How many choices deep the schedule looks ahead, and the most work (nodes x qubits**depth) a
# deeper search may take (about a second here for a 2-step kicked Ising cone at depth 3).
LOOKAHEAD = 3
LOOKAHEAD_WORK = 2_000_000
# Widths at which a deeper search stops (4^5 amplitudes per binding).
SMALL_ENOUGH = 5
_CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case", "box"})


class _Search:
    """The dependency graph of a group's instructions and the lookahead search over it."""

    def __init__(self, circuit: QuantumCircuit, measured: set[int]) -> None:
        dag = circuit_to_dag(circuit, copy_operations=False)  # only read here
        index = {bit: i for i, bit in enumerate(circuit.qubits)}
        self.nodes = [node for node in dag.topological_op_nodes() if node.op.name not in _NOT_SCHEDULED]
        self.qubits = {node: frozenset(index[q] for q in node.qargs) for node in self.nodes}
        self.successors = {
            node: [s for s in dag.op_successors(node) if s.op.name not in _NOT_SCHEDULED] for node in self.nodes
        }
        self.remaining = dict.fromkeys(range(circuit.num_qubits), 0)
        for node in self.nodes:
            for q in self.qubits[node]:
                self.remaining[q] += 1
        self.waiting = {
            node: sum(1 for p in dag.op_predecessors(node) if p.op.name not in _NOT_SCHEDULED) for node in self.nodes
        }
        self.measured = frozenset(measured)
        self.nodes_count = len(self.nodes)
        self.qubits_count = max(1, circuit.num_qubits)

    def run(self, depth: int) -> tuple[list[DAGOpNode], int]:
        """An order found with ``depth``-deep lookahead and its peak number of live qubits."""
        # Predecessor counts: one table for the whole run, updated in place with the chosen
        # step; the candidates' lookahead states only hold the counts they changed.
        waiting = dict(self.waiting)
        state = _State(set(), dict(self.remaining), {}, [n for n in self.nodes if not waiting[n]])
        order: list[DAGOpNode] = []
        width = 0
        while state.ready:
            choice: tuple[tuple[int, int], int, _State, list[DAGOpNode]] | None = None
            for candidate in state.ready:
                peak, after, steps = self._closure(candidate, state, waiting)
                ahead = self._score(after, depth - 1, waiting)
                key = (max(peak, ahead[0]), ahead[1] if depth > 1 else len(after.live))
                if choice is None or key < choice[0]:
                    choice = (key, peak, after, steps)
            assert choice is not None
            _, peak, state, steps = choice
            waiting.update(state.waiting)
            state.waiting = {}
            width = max(width, peak)
            order.extend(steps)
        return order, width

    def _score(self, state: _State, depth: int, waiting: dict[DAGOpNode, int]) -> tuple[int, int]:
        """(peak, live at the end) of the best ``depth`` further choices from ``state``."""
        if depth <= 0 or not state.ready:
            return (len(state.live), len(state.live))
        best: tuple[int, int] | None = None
        for candidate in state.ready:
            peak, after, _ = self._closure(candidate, state, waiting)
            ahead = self._score(after, depth - 1, waiting)
            key = (max(peak, ahead[0]), ahead[1])
            if best is None or key < best:
                best = key
        assert best is not None
        return best

    def _closure(
        self, start: DAGOpNode, state: _State, base: dict[DAGOpNode, int]
    ) -> tuple[int, _State, list[DAGOpNode]]:
        """Run ``start``, then every ready gate on live qubits; return the peak live count, the
        state after and the gates run. ``base`` holds the predecessor counts ``state`` did not
        change."""
        live = set(state.live)
        remaining = dict(state.remaining)
        waiting = dict(state.waiting)
        ready = list(state.ready)
        steps: list[DAGOpNode] = []
        peak = len(live)
        todo = [start]
        while todo:
            node = todo.pop()
            ready.remove(node)
            steps.append(node)
            live |= self.qubits[node]
            peak = max(peak, len(live))
            for q in self.qubits[node]:
                remaining[q] -= 1
                if remaining[q] == 0 and q not in self.measured:
                    live.discard(q)
            for successor in self.successors[node]:
                count = waiting.get(successor, base[successor]) - 1
                waiting[successor] = count
                if count == 0:
                    ready.append(successor)
            if not todo:
                follow = next((n for n in ready if self.qubits[n] <= live), None)
                if follow is not None:
                    todo.append(follow)
        return peak, _State(live, remaining, waiting, ready), steps


@dataclass
class _State:
    live: set[int]
    remaining: dict[int, int]
    # Predecessor counts changed since the run's table was last updated.
    waiting: dict[DAGOpNode, int]
    ready: list[DAGOpNode]


def _assign_wires(order: list[DAGOpNode], index: dict[object, int], measured: set[int]) -> Schedule:
    """Wires for ``order``: a qubit takes a free wire at its first gate and frees it after its
    last one unless it is measured."""
    remaining: dict[int, int] = {}
    for node in order:
        for q in node.qargs:
            remaining[index[q]] = remaining.get(index[q], 0) + 1
    free: list[int] = []
    wire: dict[int, int] = {}
    reused: set[int] = set()
    width = 0
    instructions: list[CircuitInstruction] = []
    for node in order:
        qubits = [index[q] for q in node.qargs]
        for q in qubits:
            if q not in wire:
                if free:
                    wire[q] = free.pop()
                    reused.add(q)
                else:
                    wire[q] = width
                    width += 1
        instructions.append(CircuitInstruction(node.op, node.qargs, node.cargs))
        for q in qubits:
            remaining[q] -= 1
            if remaining[q] == 0 and q not in measured:
                free.append(wire[q])
    return Schedule(tuple(instructions), wire, frozenset(reused), width)


def on_wires(
    circuit: QuantumCircuit, plan: Schedule, noise: NoiseModel | ErrorTable
) -> tuple[QuantumCircuit, NoiseModel]:
    """``circuit`` on ``plan.width`` wires with its errors explicit, and the readout-only model.

    ``noise`` holds the group's errors in ``circuit``'s numbering (compacted), as
    :func:`~worker.engines.compaction.error_table` (or ``reduce_noise_model``) gives them.
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
