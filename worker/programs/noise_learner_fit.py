"""The noise-learner's computation: Pauli-twirled fidelities of a noise model's errors, fitted.

For a layer, each instruction's ``QuantumError`` becomes a superoperator and its Pauli
fidelities ``f_P = Tr(P E(P)) / 2^k`` (those of its Pauli twirl); the layer's dressing is moved
through its gates by Clifford conjugation; the sparse Pauli-Lindblad model (weight-1 generators on
every layer qubit, weight-2 on every coupled pair) is fitted to them with rates ``>= 0``
(``worker/programs/noise_learner.py`` says what is and is not computed). Used by both params
formats: ``noise_learner_v2.py`` and ``noise_learner_v3.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
from qiskit.quantum_info import Pauli, SuperOp
from qiskit_aer.noise import NoiseModel, QuantumError

from qiskit_runtime_server.worker.engines.aer import fake_backend
from qiskit_runtime_server.worker.errors import ProgramError

PAULIS = ("X", "Y", "Z")
# IBM's twirling strategy names and the same strategies in samplomatic's boxing pass manager.
# Rates this far below zero are round-off of an exact fit, not a channel outside the model.
_RATE_ROUNDOFF = 1e-12

# A Pauli on a few of a layer's qubits: ((local qubit index, "X"|"Y"|"Z"), ...), sorted by index.
SparsePauli = tuple[tuple[int, str], ...]


@dataclass
class NoisyInstruction:
    """One instruction of a layer whose noise model has an error: local qubits and Pauli fidelities.

    ``fidelities`` maps the Pauli letters on ``qubits`` (in that order, ``"I"`` included) to the
    fidelity of the twirled error, e.g. ``{("X", "I"): 0.993, ...}``; 4**k entries.
    """

    qubits: tuple[int, ...]
    fidelities: dict[tuple[str, ...], float]


@dataclass
class LayerNoise:
    """A fitted sparse Pauli-Lindblad model of one layer.

    ``qubits`` are the physical qubits in ascending order; generator ``(j, "X")`` acts on
    ``qubits[j]``. ``rates[i]`` (1/layer, ``>= 0``) belongs to ``generators[i]``.
    """

    qubits: list[int]
    generators: list[SparsePauli]
    rates: np.ndarray
    instructions: list[NoisyInstruction] = field(default_factory=list)


def pauli_fidelities(error: QuantumError) -> dict[tuple[str, ...], float]:
    """Pauli fidelities ``Tr(P E(P)) / 2^k`` of a k-qubit ``error``: those of its Pauli twirl.

    Keys are the letters per error qubit, qubit 0 first (``("X", "I")``: X on the first qubit).
    """
    superop = SuperOp(error)
    k = error.num_qubits
    dim = 2**k
    fidelities = {}
    for letters in product("IXYZ", repeat=k):
        # qiskit labels are big-endian: the last letter acts on qubit 0.
        matrix = Pauli("".join(reversed(letters))).to_matrix()
        vector = matrix.reshape(-1, order="F")  # SuperOp acts on column-stacked density matrices
        fidelities[letters] = float((vector.conj() @ superop.data @ vector).real / dim)
    return fidelities


def _error_for(model: NoiseModel, name: str, qargs: tuple[int, ...]) -> QuantumError | None:
    local = model._local_quantum_errors.get(name, {}).get(qargs)
    error = local if local is not None else model._default_quantum_errors.get(name)
    if error is not None and error.num_qubits != len(qargs):
        raise ProgramError(
            f"The noise model's error for {name} on {list(qargs)} acts on {error.num_qubits} qubits; "
            "its twirled channel cannot be computed."
        )
    return error


def _anticommute(a: SparsePauli, b: SparsePauli) -> bool:
    letters = dict(a)
    return sum(1 for q, p in b if q in letters and letters[q] != p) % 2 == 1


def _layer_fidelity(pauli: SparsePauli, instructions: Sequence[NoisyInstruction]) -> float:
    """Fidelity of ``pauli`` under the layer's channel: the product of its instructions' channels."""
    letters = dict(pauli)
    fidelity = 1.0
    for instruction in instructions:
        key = tuple(letters.get(q, "I") for q in instruction.qubits)
        if any(p != "I" for p in key):
            fidelity *= instruction.fidelities[key]
    return fidelity


def model_generators(num_qubits: int, edges: Iterable[tuple[int, int]]) -> list[SparsePauli]:
    """The sparse model's generators: X, Y, Z on every qubit, then the 9 two-qubit Paulis per edge."""
    generators: list[SparsePauli] = [((q, p),) for q in range(num_qubits) for p in PAULIS]
    for a, b in sorted({(min(e), max(e)) for e in edges}):
        generators.extend(((a, pa), (b, pb)) for pa in PAULIS for pb in PAULIS)
    return generators


def fit_pauli_lindblad(
    num_qubits: int, edges: Iterable[tuple[int, int]], instructions: Sequence[NoisyInstruction]
) -> tuple[list[SparsePauli], np.ndarray]:
    """Fit the sparse Pauli-Lindblad model to the layer's twirled channel.

    The model's fidelities are ``f_P = exp(-2 * sum(rate_k for G_k anticommuting with P))``; the
    rates solve ``-log(f_P) / 2`` on the generators' own Paulis (as many equations as rates),
    exactly when the channel is in the model, else as non-negative least squares.

    Returns:
        The generators (``model_generators``) and their rates (non-negative, per layer).

    Raises:
        ProgramError: a Pauli fidelity is not positive (the noise is too strong to be a layer's
            error channel).
    """
    from scipy.optimize import lsq_linear
    from scipy.sparse import csr_array
    from scipy.sparse.linalg import spsolve

    generators = model_generators(num_qubits, edges)
    fidelities = np.array([_layer_fidelity(g, instructions) for g in generators])
    if np.any(fidelities <= 0):
        raise ProgramError("A Pauli fidelity of the layer's noise is not positive; no Pauli-Lindblad model fits it.")
    target = -np.log(fidelities) / 2
    # Only generators that share a qubit can anticommute: index them by qubit.
    by_qubit: dict[int, list[int]] = {}
    for k, generator in enumerate(generators):
        for q, _ in generator:
            by_qubit.setdefault(q, []).append(k)
    rows, cols = [], []
    for i, pauli in enumerate(generators):
        near = {k for q, _ in pauli for k in by_qubit[q]}
        for k in sorted(near):
            if _anticommute(pauli, generators[k]):
                rows.append(i)
                cols.append(k)
    matrix = csr_array((np.ones(len(rows)), (rows, cols)), shape=(len(generators), len(generators)))
    with np.errstate(all="ignore"):
        rates = np.asarray(spsolve(matrix.tocsc(), target))
    exact = np.all(np.isfinite(rates)) and np.allclose(matrix @ rates, target, rtol=0, atol=1e-12)
    if not exact or rates.min() < -_RATE_ROUNDOFF:
        rates = lsq_linear(matrix, target, bounds=(0, np.inf), method="trf", tol=1e-14, lsmr_tol="auto").x
    # Round-off of an exact solve (~1e-19) is a zero rate, not noise.
    rates[np.abs(rates) < _RATE_ROUNDOFF] = 0.0
    return generators, np.clip(rates, 0, None)


# Gates of one qubit's dressing per Twirl decomposition (samplomatic synthesizes every dressing
# with this fixed, parametrized sequence; rz is virtual and noiseless).
DRESSING_GATES = {"rzsx": ("sx", "sx"), "rzrx": ("rx",)}


@dataclass(frozen=True)
class Dressing:
    """The single-qubit dressing of a twirled box: which side of the hard content, which gates."""

    side: str = "left"
    gates: tuple[str, ...] = DRESSING_GATES["rzsx"]


def box_dressing(box: Any) -> Dressing | None:
    """The dressing of a box from its ``Twirl`` annotation; ``None`` for a box without one."""
    from samplomatic import Twirl
    from samplomatic.utils import get_annotation

    twirl = get_annotation(box, Twirl)
    if twirl is None:
        return None
    side = str(getattr(twirl.dressing, "value", twirl.dressing)).lower()
    decomposition = str(getattr(twirl.decomposition, "value", twirl.decomposition)).lower()
    if decomposition not in DRESSING_GATES:
        raise ProgramError(f"Unknown twirl decomposition {decomposition!r}; known: {sorted(DRESSING_GATES)}.")
    return Dressing(side, DRESSING_GATES[decomposition])


def _letters(pauli: Pauli) -> tuple[str, ...]:
    return tuple("IXZY"[int(x) + 2 * int(z)] for x, z in zip(pauli.x, pauli.z, strict=True))


def _clifford(operation: Any) -> Any:
    from qiskit.quantum_info import Clifford

    try:
        return Clifford(operation)
    except Exception:  # a non-Clifford gate (rzz(0.3), unbound parameters): no Pauli-Lindblad layer
        raise ProgramError(
            f"The layer's {operation.name} gate is not a Clifford gate; only layers of Clifford gates "
            "have a Pauli-Lindblad model."
        ) from None


def _one_qubit_fidelities(model: NoiseModel, qubit: int, gates: Sequence[str]) -> dict[str, float]:
    """Fidelities of X, Y, Z under the twirled errors of ``gates`` applied to ``qubit``."""
    fidelity = {"I": 1.0, "X": 1.0, "Y": 1.0, "Z": 1.0}
    for name in gates:
        error = _error_for(model, name, (qubit,))
        if error is not None:
            for (letter,), value in pauli_fidelities(error).items():
                fidelity[letter] *= value
    return fidelity


def _instruction_fidelities(
    operation: Any,
    error: QuantumError | None,
    dressings: Sequence[dict[str, float]],
    dressing: Dressing,
    site: str,
) -> dict[tuple[str, ...], float]:
    """Fidelities of one instruction's noise (gate error and its qubits' dressing errors).

    With the noise written after the gate ``U``, a left dressing's channel ``D`` (applied before
    ``U``) is ``U D U^dagger``, of fidelities ``f_D(U^dagger P U)``; a right dressing is after
    the gate already. Written before the gate (``site="before"``) the fidelities are those of
    ``U P U^dagger`` after it. Pauli channels compose by multiplying fidelities.
    """
    k = len(dressings)
    gate = pauli_fidelities(error) if error is not None else None
    needs_frame = site == "before" or (dressing.side == "left" and any(d["X"] != 1 or d["Z"] != 1 for d in dressings))
    clifford = _clifford(operation) if needs_frame else None

    def after(letters: tuple[str, ...]) -> float:
        fidelity = gate[letters] if gate is not None else 1.0
        dressed = letters
        if dressing.side == "left" and clifford is not None:
            dressed = _letters(Pauli("".join(reversed(letters))).evolve(clifford, frame="h"))
        for j, letter in enumerate(dressed):
            fidelity *= dressings[j][letter]
        return fidelity

    table = {}
    for letters in product("IXYZ", repeat=k):
        if site == "before" and clifford is not None:
            table[letters] = after(_letters(Pauli("".join(reversed(letters))).evolve(clifford, frame="s")))
        else:
            table[letters] = after(letters)
    return table


def layer_noise(
    qubits: Sequence[int],
    body: Iterable[tuple[Any, tuple[int, ...]]],
    model: NoiseModel,
    coupling: Iterable[tuple[int, int]],
    site: str = "after",
    dressing: Dressing | None = Dressing(),
) -> LayerNoise:
    """The Pauli-Lindblad model of the layer whose hard content is ``body`` on physical ``qubits``.

    Args:
        qubits: the layer's physical qubits (any order; the model indexes them in ascending order).
        body: ``(operation, physical qargs)`` of each instruction of the undressed box (barriers
            allowed); instructions must act on distinct qubits (a layer).
        model: the noise model whose errors are twirled.
        coupling: the backend's coupling map (directed or not): weight-2 generators on its
            edges between layer qubits, and on every two-qubit instruction's pair.
        site: ``"after"`` (noise after the gates, as Aer applies it) or ``"before"``.
        dressing: the box's dressing; the errors of its gates on every layer qubit are part of
            the layer's noise, as they are of the noise learned on hardware. ``None``: none.

    Raises:
        ProgramError: a non-Clifford gate that noise must be moved through, an error the model
            cannot express (see ``fit_pauli_lindblad``).
    """
    ordered = sorted(set(qubits))
    local = {q: i for i, q in enumerate(ordered)}
    dressing_gates = dressing.gates if dressing is not None else ()
    dressings = {q: _one_qubit_fidelities(model, q, dressing_gates) for q in ordered}
    side = dressing or Dressing()
    noisy = []
    covered: set[int] = set()
    edges = {(local[a], local[b]) for a, b in coupling if a in local and b in local and a != b}
    for operation, qargs in body:
        if operation.name == "barrier":
            continue
        if covered.intersection(qargs):
            raise ProgramError(f"The layer applies more than one instruction to qubits {sorted(covered & set(qargs))}.")
        covered.update(qargs)
        if len(qargs) == 2:
            edges.add((local[qargs[0]], local[qargs[1]]))
        error = _error_for(model, operation.name, tuple(qargs))
        fidelities = _instruction_fidelities(operation, error, [dressings[q] for q in qargs], side, site)
        noisy.append(NoisyInstruction(tuple(local[q] for q in qargs), fidelities))
    for q in ordered:
        if q not in covered:  # an idle qubit of the box: only its dressing acts on it
            noisy.append(NoisyInstruction((local[q],), {(p,): f for p, f in dressings[q].items()}))
    generators, rates = fit_pauli_lindblad(len(ordered), edges, noisy)
    return LayerNoise(ordered, generators, rates, noisy)


def readout_noise(qubits: Sequence[int], model: NoiseModel) -> LayerNoise:
    """The TREX model of measuring ``qubits``: an X generator per qubit from its readout error.

    With measurement twirling the readout error is a symmetric flip with
    ``p = (P(1|0) + P(0|1)) / 2``; its rate is ``-log(1 - 2p) / 2``.

    Raises:
        ProgramError: a readout error with ``p >= 1/2`` (no such rate).
    """
    ordered = sorted(set(qubits))
    rates = []
    for q in ordered:
        error = model._local_readout_errors.get((q,), model._default_readout_error)
        flip = 0.0
        if error is not None:
            probabilities = np.asarray(error.probabilities)
            flip = float(probabilities[0, 1] + probabilities[1, 0]) / 2
        if flip >= 0.5:
            raise ProgramError(f"The readout error of qubit {q} flips half the outcomes or more; it has no TREX rate.")
        rates.append(-math.log1p(-2 * flip) / 2)
    return LayerNoise(ordered, [((j, "X"),) for j in range(len(ordered))], np.array(rates))


def coupling_edges(backend: str) -> list[tuple[int, int]]:
    """The coupled qubit pairs of ``backend`` (where the model has weight-2 generators)."""
    coupling_map = fake_backend(backend).coupling_map
    return [(int(a), int(b)) for a, b in coupling_map.get_edges()] if coupling_map is not None else []


def first_error(exc: Exception) -> str:
    """The first error of a (pydantic) validation error as ``"where: message"``."""
    errors: list[dict[str, Any]] = getattr(exc, "errors", list)()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
