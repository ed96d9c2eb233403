"""Split an estimator PUB by the light cones of its Pauli terms, and put the results back.

An expectation value ``<P>`` depends only on the gates in the backward light cone of ``P``'s
support (:mod:`worker.engines.light_cone`, exact under the backends' local noise). A 100-qubit
PUB whose terms each see a few qubits (one QAOA layer's ``Zi Zj``, a kicked Ising ``Z62`` after
a step or two) then needs only small simulations. Terms are packed into *pieces*: a piece is a
sub-PUB on the same circuit restricted to the union of its terms' cones, whose widest group of
connected cone qubits stays within ``max_width`` (terms with disjoint cones share a piece at no
cost: the engine runs disjoint groups separately). Terms whose own cones are wider share a piece
only with terms whose cones they do not touch.

Nothing is split when the whole PUB's cone already fits: the PUB then runs as one piece, still
restricted to the union of its terms' cones. Terms whose cones are wide share one piece when
their cones are Clifford at every binding (the stabilizer method handles any width at once).

Each piece is an ordinary ``EstimatorPub`` whose observables are its Pauli terms, one per row
(shape ``(k, 1, ..., 1)``, broadcast against the bindings), so it runs through the plain or the
mitigated estimator path unchanged. :func:`combine` rebuilds the PUB's fields: expectation-value
fields as ``sum_j c_j <P_j>``, error fields (``std``/``standard_error`` in the name) as
``sum_j |c_j| s_j``, the bound the unsplit estimator reports too. How many pieces ran is in the job's
``metadata["simulator"]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from qiskit.circuit import QuantumCircuit
from qiskit.primitives import PrimitiveResult, PubResult
from qiskit.primitives.containers import DataBin
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.quantum_info import Pauli

from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.engines.clifford import clifford_at_every_binding
from qiskit_runtime_server.worker.engines.estimation import pauli_terms
from qiskit_runtime_server.worker.engines.light_cone import Cone, backward_cone, restrict
from qiskit_runtime_server.worker.engines.partition import noise_is_local

# Widest group of interacting cone qubits a piece may hold. Terms with disjoint cones share a
# piece for free (the engine runs disjoint groups apart), so a small width costs few extra
# pieces, while a noisy density matrix costs 4**width: 8 qubits run in milliseconds.
MAX_PIECE_WIDTH = 8


@dataclass(frozen=True)
class Piece:
    """Pauli ``labels`` (full-width, Qiskit order) measured together on ``pub``; ``width`` is the
    widest group of interacting qubits among their cones."""

    labels: tuple[str, ...]
    pub: EstimatorPub
    width: int


def _support(label: str) -> list[int]:
    pauli = Pauli(label)
    return [int(q) for q in np.flatnonzero(pauli.z | pauli.x)]


class _Groups:
    """Disjoint qubit sets of the cones packed so far (overlapping cones merged)."""

    def __init__(self) -> None:
        self.sets: list[frozenset[int]] = []

    def width_with(self, qubits: frozenset[int]) -> int:
        merged = len(qubits | frozenset().union(*(s for s in self.sets if not s.isdisjoint(qubits))))
        return max([merged, *(len(s) for s in self.sets)])

    def add(self, qubits: frozenset[int]) -> None:
        touching = [s for s in self.sets if not s.isdisjoint(qubits)]
        self.sets = [s for s in self.sets if s.isdisjoint(qubits)]
        self.sets.append(qubits.union(*touching))

    @property
    def width(self) -> int:
        return max((len(s) for s in self.sets), default=0)


def plan_pieces(pub: EstimatorPub, terms: list[dict[str, float]], max_width: int = MAX_PIECE_WIDTH) -> list[Piece]:
    """The pieces that together measure every non-identity term of ``pub``.

    One piece holds every term when the cones of all terms together fit in ``max_width``.
    Otherwise terms whose own cone fits are packed first-fit into pieces whose widest group of
    interacting cone qubits stays within ``max_width``; the terms with wider cones share one
    piece when the circuit restricted to their cones is Clifford at every binding (the
    stabilizer method runs them together at one cost), else those whose cones are disjoint share
    pieces first-fit (each cone still runs as its own group, on few wires when its qubits can be
    traced out early, ``qubit_reuse.py``). Returns ``[]`` when the
    circuit has classical variables (the caller runs the PUB as it is).
    """
    labels = sorted({label for term in terms for label in term if set(label) != {"I"}})
    if not labels:
        return []
    circuit = pub.circuit
    cones: dict[str, Cone] = {}
    for label in labels:
        cone = backward_cone(circuit, qubits=_support(label))
        if cone is None:
            return []
        cones[label] = cone
    whole = _Groups()
    for label in labels:
        whole.add(cones[label].qubits)
    # One piece, the union of the cones, when that is cheap already: it still drops every gate
    # outside the cones (the mitigated path measures every qubit of the circuit; qubits left
    # idle are then sampled exactly, without Aer).
    if whole.width <= max_width:
        return [_piece(pub, labels, list(cones.values()), whole.width)]
    order = sorted(labels, key=lambda lab: (min(cones[lab].qubits), lab))
    narrow = [label for label in order if len(cones[label].qubits) <= max_width]
    rest = [label for label in order if len(cones[label].qubits) > max_width]
    packed: list[tuple[list[str], _Groups]] = []
    for label in narrow:
        qubits = cones[label].qubits
        target = next((p for p in packed if p[1].width_with(qubits) <= max_width), None)
        if target is None:
            target = ([], _Groups())
            packed.append(target)
        target[0].append(label)
        target[1].add(qubits)
    pieces = [_piece(pub, members, [cones[m] for m in members], groups.width) for members, groups in packed]
    rest_cones = [cones[label] for label in rest]
    if len(rest) > 1 and clifford_at_every_binding(restrict(circuit, _union(rest_cones)), pub.parameter_values):
        # Clifford: one stabilizer run measures them all, cheaper than a run per term.
        together = _Groups()
        for cone in rest_cones:
            together.add(cone.qubits)
        pieces.append(_piece(pub, rest, rest_cones, together.width))
    else:
        # Wide cones that do not touch share a piece: the engine runs each disjoint group on its
        # own (on few wires when its qubits can be traced out early, qubit_reuse.py), so a piece
        # costs no more per cone, while the estimator pipeline's fixed cost per piece (boxing,
        # samplex build, TREX calibration) is paid once for all of them.
        apart: list[tuple[list[str], _Groups]] = []
        for label in rest:
            qubits = cones[label].qubits
            target = next((p for p in apart if all(s.isdisjoint(qubits) for s in p[1].sets)), None)
            if target is None:
                target = ([], _Groups())
                apart.append(target)
            target[0].append(label)
            target[1].add(qubits)
        pieces.extend(_piece(pub, members, [cones[m] for m in members], groups.width) for members, groups in apart)
    return pieces


def _union(cones: Any) -> Cone:
    instructions: set[int] = set()
    qubits: set[int] = set()
    for cone in cones:
        instructions.update(cone.instructions)
        qubits.update(cone.qubits)
    return Cone(tuple(sorted(instructions)), frozenset(qubits))


def _piece(pub: EstimatorPub, labels: list[str], cones: list[Cone], width: int) -> Piece:
    circuit: QuantumCircuit = restrict(pub.circuit, _union(cones))
    ndim = len(pub.parameter_values.shape)
    rows = np.empty(len(labels), dtype=object)
    for i, label in enumerate(labels):
        rows[i] = {label: 1.0}
    observables = ObservablesArray(rows.reshape((len(labels),) + (1,) * ndim))
    values = pub.parameter_values
    if circuit.num_parameters != pub.circuit.num_parameters:
        parameters = tuple(circuit.parameters)
        if parameters:
            full = pub.parameter_values.as_array(pub.circuit.parameters)
            values = BindingsArray({parameters: full[..., _columns(pub, circuit)]})
        else:
            values = BindingsArray(shape=pub.parameter_values.shape)
    sub = EstimatorPub(circuit, observables, values, pub.precision, validate=False)
    return Piece(tuple(labels), sub, width)


def _columns(pub: EstimatorPub, circuit: QuantumCircuit) -> list[int]:
    position = {parameter: i for i, parameter in enumerate(pub.circuit.parameters)}
    return [position[parameter] for parameter in circuit.parameters]


def _is_error_field(name: str) -> bool:
    return "std" in name or "standard_error" in name


def combine(
    pub: EstimatorPub, terms: list[dict[str, float]], pieces: list[Piece], results: list[PubResult]
) -> PubResult:
    """``pub``'s result from its pieces' results (same fields, shaped ``pub.shape`` plus any
    trailing axes the fields carry, e.g. ZNE noise factors), with the first piece's metadata."""
    values_shape = pub.parameter_values.shape
    bindings = math.prod(values_shape)
    row_of: dict[str, tuple[int, int]] = {}
    for p, piece in enumerate(pieces):
        for r, label in enumerate(piece.labels):
            row_of[label] = (p, r)
    identity = "I" * pub.circuit.num_qubits
    shape = pub.shape
    binding_index = np.broadcast_to(np.arange(bindings).reshape(values_shape), shape)
    term_index = np.broadcast_to(np.arange(len(terms)).reshape(pub.observables.shape), shape)
    fields: dict[str, np.ndarray] = {}
    for name in results[0].data:
        arrays = [np.asarray(result.data[name], dtype=float) for result in results]
        extra = arrays[0].shape[1 + len(values_shape) :]
        error = _is_error_field(name)
        per_term = np.zeros((len(terms), bindings, *extra))
        for t, term in enumerate(terms):
            for label, coeff in term.items():
                if label == identity:
                    if not error:
                        per_term[t] += coeff
                    continue
                p, r = row_of[label]
                value = arrays[p][r].reshape(bindings, *extra)
                per_term[t] += abs(coeff) * value if error else coeff * value
        fields[name] = np.asarray(per_term[term_index, binding_index]).reshape(shape + extra)
    # The PUB's metadata is that of its first piece, the same keys as an unsplit PUB's.
    return PubResult(DataBin(**fields, shape=shape), metadata=dict(results[0].metadata))


def run_by_light_cones(
    pubs: list[EstimatorPub],
    run: Callable[[list[EstimatorPub]], PrimitiveResult],
    engine: SimulationEngine,
    noise_model: Any,
) -> PrimitiveResult:
    """Run estimator ``pubs`` with ``run`` (the plain or the mitigated path), each PUB split into
    light-cone pieces where that pays (:func:`plan_pieces`), and put each PUB back together.

    Splitting needs local noise (the backend's own model, or an explicit one whose errors act
    on their instructions' qubits); otherwise, or for observables that are not Pauli sums, a
    PUB runs whole. The job-level metadata is that of ``run``'s results.
    """
    local = noise_model is None or noise_is_local(noise_model)
    results: list[PubResult] = []
    metadata: dict[str, Any] = {}
    for pub in pubs:
        terms = pauli_terms(pub) if local else None
        pieces = plan_pieces(pub, terms) if terms is not None else []
        if not pieces:
            whole = run([pub])
            results.append(whole[0])
            metadata = dict(whole.metadata)
            continue
        engine.report.light_cones += len(pieces)
        parts = run([piece.pub for piece in pieces])
        results.append(combine(pub, terms or [], pieces, list(parts)))
        metadata = dict(parts.metadata)
    return PrimitiveResult(results, metadata=metadata)
