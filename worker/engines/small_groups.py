"""Exact output law of a small group of qubits (2 to 9), for every binding at once, with numpy.

A CHSH sweep, a Bell pair or a twirled two-qubit experiment on a 127-qubit device is one group
of two noisy qubits with hundreds or thousands of bindings (angles x twirling randomizations);
a light cone on reused wires (``qubit_reuse.py``) is a group of 5 to 9 wires with a few thousand
instructions and one binding per twirling randomization. Aer spends a fixed cost per binding
and per instruction on such runs (about 14 us per instruction on 5 wires); here the whole PUB is
one batched density matrix ``rho`` of shape ``(bindings, 2^k, 2^k)``.

Each instruction is a superoperator on its own qubits (row-major vectorisation:
``vec(K rho K^+) = (K (x) K*) vec(rho)``): ``U (x) U*`` for a gate, per binding where it is
parameterized, and each of its errors' channel after it, in the order qiskit-aer applies them
(the noise model's error for that instruction on those physical qubits, then each relaxation
pass's error; errors on ``measure`` before it). Consecutive superoperators on the same qubits,
and single-qubit ones next to a two-qubit one on their qubit, are multiplied together when the
program is compiled (:class:`Fusion`): a twirled layer's runs of ``rz``/``sx`` and their errors
fold into the ``ecr`` block beside them. Products of channels are the channel of the sequence,
so this is exact. Measurements must come last on their qubits; the law of the true outcomes is
the diagonal of ``rho``, and each recorded bit passes through its qubit's readout matrix, as
Aer applies it.

:func:`compile_small_group` returns ``None`` for anything it does not cover (control flow, a
qubit measured twice or measured before another of its gates, an instruction without a
matrix); the caller then runs the group on Aer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qiskit.circuit import CircuitInstruction, Delay, Parameter, QuantumCircuit
from qiskit.quantum_info import Operator
from qiskit_aer.noise import QuantumError

from qiskit_runtime_server.worker.engines.clifford import row_major_superop
from qiskit_runtime_server.worker.engines.single_qubit import (
    NoiseChannels,
    Unsupported,
    _bound_unitaries,
    instruction_errors,
)

# The widest group run here: 2^k x 2^k density matrices per binding. Groups of up to
# ALWAYS_QUBITS always run here; wider ones where that is predicted faster than Aer.
MAX_QUBITS = 9
ALWAYS_QUBITS = 4
# predicted_seconds: per block (a fused superoperator) and per complex multiply-add.
SMALL_GROUP_SECONDS_PER_BLOCK = 2.5e-5
SMALL_GROUP_SECONDS_PER_UNIT = 1.0e-9
# Compile-time cost per instruction and error folded into a block.
SMALL_GROUP_SECONDS_PER_STEP = 2.2e-5
# Amplitudes of the batched density matrix held at once (bindings run in chunks beyond).
CHUNK_AMPLITUDES = 2**21
# Most bytes the per-binding superoperators of one program may take (a two-qubit block is
# 4 KiB per binding); a group above it (a long sweep over a long circuit) runs on Aer instead.
MAX_BINDING_BYTES = 2**30
_RESET_KRAUS = (np.array([[1, 0], [0, 0]], dtype=complex), np.array([[0, 1], [0, 0]], dtype=complex))


def unitary_superop(unitaries: np.ndarray) -> np.ndarray:
    """Row-major superoperators ``(..., d^2, d^2)`` of unitaries ``(..., d, d)``: ``U (x) U*``."""
    d = unitaries.shape[-1]
    product = np.einsum("...ik,...jl->...ijkl", unitaries, np.conj(unitaries))
    return np.asarray(product.reshape(*unitaries.shape[:-2], d * d, d * d))


def lift(superop: np.ndarray, qubits: tuple[int, ...], onto: tuple[int, ...]) -> np.ndarray:
    """``superop`` ``(..., 4^g, 4^g)`` on local ``qubits`` as a superoperator on ``onto`` (a
    superset, same bit convention: bit ``j`` of a gate index is ``qubits[j]``), identity on the
    rest."""
    if qubits == onto:
        return superop
    g, big = len(qubits), len(onto)
    labels = {q: (4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3) for i, q in enumerate(onto)}  # row/col out, row/col in
    high_first = list(reversed(qubits))
    tensor = superop.reshape(*superop.shape[:-2], *([2] * (4 * g)))
    operands: list[Any] = [
        tensor,
        [Ellipsis, *[labels[q][0] for q in high_first], *[labels[q][1] for q in high_first],
         *[labels[q][2] for q in high_first], *[labels[q][3] for q in high_first]],
    ]  # fmt: skip
    eye = np.eye(2)
    for q in onto:
        if q not in qubits:
            operands += [eye, [labels[q][0], labels[q][2]], eye, [labels[q][1], labels[q][3]]]
    out = list(reversed(onto))
    operands.append([Ellipsis, *[labels[q][slot] for slot in range(4) for q in out]])
    lifted = np.einsum(*operands)
    return np.asarray(lifted.reshape(*superop.shape[:-2], 4**big, 4**big))


@dataclass
class Block:
    """A superoperator ``(1 or bindings, 4^g, 4^g)`` on local ``qubits`` (bit ``j`` = ``qubits[j]``)."""

    qubits: tuple[int, ...]
    superop: np.ndarray


_EYE_SUPEROP = np.eye(4, dtype=complex)[None]


def pair_superop(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The superoperator ``(..., 16, 16)`` on two qubits of single-qubit ones ``(..., 4, 4)``
    on bit 0 (``low``) and bit 1 (``high``)."""
    a = low.reshape(*low.shape[:-2], 2, 2, 2, 2)
    b = high.reshape(*high.shape[:-2], 2, 2, 2, 2)
    product = np.einsum("...wxyz,...abcd->...awbxcydz", a, b)
    return np.asarray(product.reshape(*product.shape[:-8], 16, 16))


@dataclass
class Fusion:
    """The blocks of a program as instructions arrive, multiplied together where that is exact.

    Single-qubit superoperators wait per qubit (``pending``), multiplied as they come; a
    multi-qubit one takes in the waiting ones of its qubits, then joins the last block when that
    block is on the same qubits and nothing touched them since; otherwise it starts a block. What
    still waits at the end joins the last block on its qubit (nothing touched the qubit since).
    """

    blocks: list[Block] = field(default_factory=list)
    last: dict[int, int] = field(default_factory=dict)
    pending: dict[int, np.ndarray] = field(default_factory=dict)
    steps: int = 0

    def add(self, qubits: tuple[int, ...], superop: np.ndarray) -> None:
        self.steps += 1
        if superop.ndim == 2:
            superop = superop[None]
        if len(qubits) == 1:
            (q,) = qubits
            waiting = self.pending.get(q)
            self.pending[q] = superop if waiting is None else superop @ waiting
            return
        before = [self.pending.pop(q, None) for q in qubits]
        if any(p is not None for p in before):
            if len(qubits) == 2:
                first = pair_superop(*(_EYE_SUPEROP if p is None else p for p in before))
            else:
                first = np.eye(4 ** len(qubits), dtype=complex)[None]
                for q, p in zip(qubits, before, strict=True):
                    if p is not None:
                        first = lift(p, (q,), qubits) @ first
            superop = superop @ first
        latest = {self.last.get(q) for q in qubits}
        if len(latest) == 1 and (index := latest.pop()) is not None:
            block = self.blocks[index]
            if set(block.qubits) == set(qubits):
                block.superop = lift(superop, qubits, block.qubits) @ block.superop
                return
        self.blocks.append(Block(qubits, superop))
        for q in qubits:
            self.last[q] = len(self.blocks) - 1

    def result(self) -> list[Block]:
        """The blocks, in order, with what still waits folded in."""
        for q, waiting in sorted(self.pending.items()):
            if q in self.last:
                block = self.blocks[self.last[q]]
                block.superop = lift(waiting, (q,), block.qubits) @ block.superop
            else:
                self.blocks.append(Block((q,), waiting))
                self.last[q] = len(self.blocks) - 1
        self.pending.clear()
        return self.blocks


def apply(rho: np.ndarray, block: Block, num_qubits: int) -> np.ndarray:
    """``rho`` as a tensor ``(bindings, 2, ..., 2)`` (row bits high to low, then column bits)
    after ``block``; its superoperator's batch is 1 or ``bindings``."""
    k, g = num_qubits, len(block.qubits)
    high_first = list(reversed(block.qubits))
    source = [1 + (k - 1 - q) for q in high_first] + [1 + k + (k - 1 - q) for q in high_first]
    target = list(range(2 * k + 1 - 2 * g, 2 * k + 1))
    moved = np.moveaxis(rho, source, target)
    shape = moved.shape
    flat = moved.reshape(shape[0], -1, 4**g)
    out = flat @ np.swapaxes(block.superop, -1, -2)
    return np.moveaxis(out.reshape(shape), target, source)


@dataclass
class SmallGroupProgram:
    """The compiled instructions of one small group: its fused blocks, the measured local
    qubits with their classical bits, and each one's readout matrix ``P[true, recorded]``."""

    blocks: list[Block]
    measured: list[tuple[int, int]]
    readout: list[np.ndarray]
    num_qubits: int
    bindings: int
    steps: int = 0
    instructions: int = 0

    def probabilities(self) -> np.ndarray:
        """Law of the recorded outcomes ``(bindings, 2^m)`` over the measured qubits (outcome
        index bit ``j`` = measurement ``j``), readout errors included."""
        dim = 2**self.num_qubits
        chunk = max(1, CHUNK_AMPLITUDES // (dim * dim))
        diagonal = np.empty((self.bindings, dim))
        for start in range(0, self.bindings, chunk):
            stop = min(start + chunk, self.bindings)
            rho = np.zeros((stop - start, dim * dim), dtype=complex)
            rho[:, 0] = 1.0
            rho = rho.reshape(stop - start, *([2] * (2 * self.num_qubits)))
            for block in self.blocks:
                part = block if block.superop.shape[0] == 1 else Block(block.qubits, block.superop[start:stop])
                rho = apply(rho, part, self.num_qubits)
            square = rho.reshape(stop - start, dim, dim)
            diagonal[start:stop] = np.clip(np.real(np.einsum("bii->bi", square)), 0.0, None)
        full = np.arange(dim)
        law = np.zeros((self.bindings, 2 ** len(self.measured)))
        outcome = sum(((full >> q) & 1) << j for j, (q, _) in enumerate(self.measured))
        np.add.at(law.T, np.asarray(outcome), diagonal.T)
        for j, readout in enumerate(self.readout):
            law = _apply_readout(law, readout, j, len(self.measured))
        totals = law.sum(axis=1, keepdims=True)
        return law / np.where(totals > 0, totals, 1.0)

    def predicted_seconds(self, shots: int) -> float:
        """Predicted time (s) of compiling and :meth:`sample`: a fixed cost per instruction
        folded and per block, plus the batched products and the draws (measured on 2 cores:
        about 22 us per instruction or error, 25 us per block and 1 ns per multiply-add)."""
        dim = 2**self.num_qubits
        units = sum(dim * dim * 4 ** len(block.qubits) for block in self.blocks) * self.bindings
        return float(
            SMALL_GROUP_SECONDS_PER_STEP * self.steps
            + SMALL_GROUP_SECONDS_PER_BLOCK * len(self.blocks) * max(1, self.bindings * dim * dim // CHUNK_AMPLITUDES)
            + SMALL_GROUP_SECONDS_PER_UNIT * (units + self.bindings * shots * dim)
        )

    def sample(self, shots: int, rng: np.random.Generator, num_clbits: int) -> np.ndarray:
        """Recorded bits ``(bindings, shots, num_clbits)`` (the group's clbits, circuit order)."""
        law = self.probabilities()
        cdf = np.cumsum(law, axis=1)
        cdf[:, -1] = 1.0
        draws = rng.random((self.bindings, shots))
        outcomes = (draws[:, :, None] >= cdf[:, None, :-1]).sum(axis=2)
        bits = np.zeros((self.bindings, shots, num_clbits), dtype=bool)
        for j, (_, clbit) in enumerate(self.measured):
            bits[:, :, clbit] = (outcomes >> j) & 1
        return bits


def _apply_readout(law: np.ndarray, readout: np.ndarray, bit: int, width: int) -> np.ndarray:
    """Pass bit ``bit`` of the outcome law ``(bindings, 2^width)`` through ``P[true, recorded]``."""
    shaped = law.reshape(law.shape[0], *([2] * width))
    axis = width - bit  # axis 1 is the highest bit
    moved = np.moveaxis(shaped, axis, -1) @ readout
    return np.asarray(np.moveaxis(moved, -1, axis).reshape(law.shape))


def compile_small_group(
    circuit: QuantumCircuit,
    qubits: tuple[int, ...],
    clbits: tuple[int, ...],
    noise: NoiseChannels,
    values: np.ndarray,
    columns: Mapping[Parameter, int],
) -> SmallGroupProgram | None:
    """The exact program of the group of physical ``qubits`` of ``circuit`` (which interacts
    with nothing else) for parameter ``values`` ``(bindings, P)``; ``clbits`` are the group's
    classical bits (the program's bits come in that order). ``None`` when not covered."""
    if not 2 <= len(qubits) <= MAX_QUBITS:
        return None
    local = {q: i for i, q in enumerate(qubits)}
    if values.shape[0] > 1:
        qubit_set = frozenset(circuit.qubits[q] for q in qubits)
        parameterized = sum(
            1 for i in circuit.data if i.operation.is_parameterized() and not qubit_set.isdisjoint(i.qubits)
        )
        if values.shape[0] * parameterized * 16 * 16 * 16 > MAX_BINDING_BYTES:
            return None  # each parameterized gate can make a two-qubit block per binding
    position = {c: i for i, c in enumerate(clbits)}
    qubit_index = {bit: i for i, bit in enumerate(circuit.qubits)}
    clbit_index = {bit: i for i, bit in enumerate(circuit.clbits)}
    bindings = values.shape[0]
    fusion = Fusion()
    measured: list[tuple[int, int]] = []
    readout: list[np.ndarray] = []
    done: set[int] = set()
    instructions = 0
    try:
        for instruction in circuit.data:
            on = tuple(qubit_index[q] for q in instruction.qubits)
            if instruction.name == "barrier" or not any(q in local for q in on):
                continue
            instructions += 1
            targets = tuple(local[q] for q in on)
            if done.intersection(targets) or getattr(instruction.operation, "blocks", None):
                return None  # something after a measurement, or control flow
            if instruction.name == "measure":
                _add_errors(fusion, noise, instruction, on, targets)  # Aer: before the measurement
                done.add(targets[0])
                measured.append((targets[0], position[clbit_index[instruction.clbits[0]]]))
                readout.append(noise.readout(on[0]))
                continue
            if instruction.name == "quantum_channel":  # an error stated in the circuit (qubit_reuse.py)
                fusion.add(targets, _stated_error(instruction.operation._quantum_error))
                continue
            if instruction.name == "reset":
                fusion.add(targets, _RESET_SUPEROP)
            elif instruction.name != "delay":
                fusion.add(targets, _unitary(instruction, values, columns))
            _add_errors(fusion, noise, instruction, on, targets)
    except Unsupported:
        return None
    except Exception:  # anything unexpected: Aer simulates the group instead
        return None
    return SmallGroupProgram(fusion.result(), measured, readout, len(qubits), bindings, fusion.steps, instructions)


_RESET_SUPEROP: np.ndarray = unitary_superop(_RESET_KRAUS[0]) + unitary_superop(_RESET_KRAUS[1])


def _unitary(instruction: CircuitInstruction, values: np.ndarray, columns: Mapping[Parameter, int]) -> np.ndarray:
    """The instruction's superoperator on its own qubits: ``(bindings, ...)`` when parameterized."""
    operation = instruction.operation
    if instruction.clbits:
        raise Unsupported("a gate with classical bits")
    if operation.is_parameterized():
        return unitary_superop(_bound_unitaries(operation, values, columns))
    return _fixed(operation.name, tuple(float(p) for p in operation.params), operation)


_FIXED: dict[tuple[object, ...], np.ndarray] = {}


def _fixed(name: str, params: tuple[float, ...], operation: Any) -> np.ndarray:
    key = (name, params)
    superop = _FIXED.get(key)
    if superop is None:
        superop = unitary_superop(Operator(operation).data)[None]
        if len(_FIXED) < 4096:
            _FIXED[key] = superop
    return superop


def _stated_error(error: QuantumError) -> np.ndarray:
    """Superoperator of an error instruction (the engine's Kraus-form errors are shared by
    every circuit of a backend, so they are memoised by the error object)."""
    return _memoised((id(error),), error, error)


def _add_errors(
    fusion: Fusion,
    noise: NoiseChannels,
    instruction: CircuitInstruction,
    physical: tuple[int, ...],
    targets: tuple[int, ...],
) -> None:
    """Add the errors qiskit-aer applies with ``instruction`` on ``physical`` qubits
    (:func:`~worker.engines.single_qubit.instruction_errors`), memoised per noise model."""
    model = noise.model
    if model is None:
        return
    operation = instruction.operation
    duration = (operation.duration, operation.unit) if isinstance(operation, Delay) else None
    for index, error in enumerate(instruction_errors(model, operation, physical)):
        key = (id(model), operation.name, physical, duration, index)
        fusion.add(targets, _memoised(key, model, error))


# Superoperators by key (ids of the model or error they came from), with that owner: an id is
# only reused once its object is gone, and the identity check notices.
_SUPEROPS: dict[tuple[object, ...], tuple[object, np.ndarray]] = {}


def _memoised(key: tuple[object, ...], owner: object, error: QuantumError) -> np.ndarray:
    cached = _SUPEROPS.get(key)
    if cached is None or cached[0] is not owner:
        cached = (owner, row_major_superop(error)[None])
        if len(_SUPEROPS) > 8192:
            _SUPEROPS.clear()
        _SUPEROPS[key] = cached
    return cached[1]
