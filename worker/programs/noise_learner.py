"""The ``noise-learner`` program: ``NoiseLearner`` (v2 params) and ``NoiseLearnerV3`` (schema params).

On IBM hardware this program runs Pauli-Lindblad learning experiments (van den Berg et al.,
arXiv:2201.09866): each layer of two-qubit gates is repeated ``layer_pair_depths`` pairs of
times under ``num_randomizations`` Pauli twirls, the decay of Pauli fidelities is fitted, and a
sparse Pauli-Lindblad model is returned. A simulator knows the true noise, so nothing is
learned here: for every layer the Pauli-twirled channel of the noise model's errors on the
layer's instructions is **computed** (each gate's ``QuantumError`` as a superoperator, its Pauli
fidelities ``f_P = Tr(P E(P)) / 2^k``, which are exactly the fidelities of its Pauli twirl), and
the sparse Pauli-Lindblad model is fitted to them: generators are the weight-1 Paulis on every
layer qubit and the weight-2 Paulis on every coupled pair of layer qubits, rates ``>= 0``, least
squares on ``-log(f_P) / 2 = sum of the rates of the generators that anticommute with P`` over
the same Paulis. For the fake backends' noise (local two-qubit gate errors) the model is exact.
No shots are simulated: the options that size experiments (``shots_per_randomization``,
``num_randomizations``, ``layer_pair_depths``) are reported in the metadata as IBM reports them
and have no other effect; ``twirling_strategy`` decides which qubits each layer twirls.

What is computed, and what is not:

* the errors of every instruction of the layer's hard content (the two-qubit gates, and any
  other instruction the noise model has an error for, ``id`` included), in the direction the
  circuit uses them;
* the errors of every layer qubit's dressing (the single-qubit gates samplomatic synthesizes
  with the twirling Paulis merged in: two ``sx`` for ``rz-sx-rz-sx-rz``), as hardware learning
  measures them with the layer; a left dressing acts before the gates, so its Pauli channel is
  moved through them by Clifford conjugation (its fidelity for ``P`` is that of ``U^dagger P U``);
  the rotations between the two ``sx`` are ignored (a second-order effect);
* not idle-qubit relaxation, which Aer applies only to explicit ``delay`` instructions;
* the noise is placed where the layer's ``InjectNoise`` annotation says (``site="after"``, the
  default: after the two-qubit gates, where Aer applies gate errors; ``"before"``: conjugated
  through the layer's gates). Layers whose noise must cross a non-Clifford gate fail the job.

Params (the ``POST /jobs`` body of docs/protocol.md §5.1, program ``noise-learner``):

* ``NoiseLearner`` (``qiskit_ibm_runtime.noise_learner``) sends RuntimeEncoder JSON
  ``{"circuits": [QuantumCircuit, ...], "options": {...}}`` with the options of
  ``ibm_quantum_schemas.noise_learner_v2.version_0_1.OptionsModel``. Layers are found as the
  client's boxing pass manager (samplomatic's ``generate_boxing_pass_manager``) groups gates for
  the ``twirling_strategy``; unique layers are ordered by how often they occur, then by their
  number of two-qubit gates, and the first ``max_layers_to_learn`` are answered as a
  ``NoiseLearnerResult`` of ``LayerError`` with a ``PauliLindbladError`` each (RuntimeEncoder),
  metadata ``{"backend", "input_options"}`` as in ``ResultsMetadataModel``.
* ``NoiseLearnerV3`` sends the ``ibm_quantum_schemas.noise_learner_v3`` ``ParamsModel`` of its
  ``schema_version`` (boxed, twirl-annotated instructions); the answer is that version's
  ``NoiseLearnerV3ResultsModel``, one result per instruction, built with the client's own
  converters. Gate layers get the Pauli-Lindblad model above (``learning_protocol:
  "lindblad"``); measurement boxes (TREX) get one ``X`` generator per qubit whose rate gives the
  twirled readout flip probability ``p = (P(1|0) + P(0|1)) / 2`` of the noise model
  (``rate = -log(1 - 2p) / 2``, so ``pauli_fidelity(Z) = 1 - 2p``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import CircuitInstruction, QuantumRegister
from qiskit.quantum_info import Pauli, SuperOp
from qiskit_aer.noise import NoiseModel, QuantumError

from qiskit_runtime_server.worker.engines.aer import backend_noise_model, fake_backend
from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.primitives import ProgramOutput

PAULIS = ("X", "Y", "Z")
# IBM's twirling strategy names and the same strategies in samplomatic's boxing pass manager.
_STRATEGIES = {"active": "active", "active-accum": "active_accum", "active-circuit": "active_circuit", "all": "all"}
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


def _coupling(backend: str) -> list[tuple[int, int]]:
    coupling_map = fake_backend(backend).coupling_map
    return [(int(a), int(b)) for a, b in coupling_map.get_edges()] if coupling_map is not None else []


def _first_error(exc: Exception) -> str:
    errors: list[dict[str, Any]] = getattr(exc, "errors", list)()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))


# --- NoiseLearner (params of ibm_quantum_schemas.noise_learner_v2) -------------------------------


@dataclass
class _Layer:
    """A unique layer found in the circuits: its box qubits, two-qubit gates and occurrences."""

    qubits: list[int]
    gates: list[tuple[Any, tuple[int, ...]]]
    dressing: Dressing | None
    count: int = 0
    first_seen: int = 0


def _circuits(params: dict[str, Any], width: int) -> list[QuantumCircuit]:
    from qiskit import qasm3

    raw = params.get("circuits")
    if not isinstance(raw, list) or not raw:
        raise ProgramError("params.circuits must be a non-empty list of circuits.")
    circuits = []
    for index, circuit in enumerate(raw):
        if isinstance(circuit, str):
            try:
                circuit = qasm3.loads(circuit)
            except Exception as exc:  # the importer raises many types
                raise ProgramError(f"Circuit {index} is not valid OpenQASM 3: {exc}") from None
        if not isinstance(circuit, QuantumCircuit):
            raise ProgramError(f"Circuit {index} must be a QuantumCircuit or an OpenQASM 3 string.")
        if circuit.num_qubits > width:
            raise ProgramError(
                f"Circuit {index} has {circuit.num_qubits} qubits, more than the {width} qubits of the backend."
            )
        circuits.append(circuit)
    return circuits


def _v2_options(raw: Any) -> tuple[Any, NoiseModel | None]:
    """The validated ``OptionsModel`` and the ``simulator.noise_model`` (a decoded Aer model)."""
    from ibm_quantum_schemas.noise_learner_v2.version_0_1 import OptionsModel
    from pydantic import ValidationError

    options = dict(raw or {})
    if not isinstance(raw, dict | None):
        raise ProgramError("params.options must be a mapping.")
    simulator = options.get("simulator")
    noise_model = None
    if isinstance(simulator, dict) and "noise_model" in simulator:
        simulator = dict(simulator)
        noise_model = simulator.pop("noise_model")
        if noise_model is not None and not isinstance(noise_model, NoiseModel):
            raise ProgramError("Option simulator.noise_model must be a qiskit_aer NoiseModel.")
        options["simulator"] = simulator
    try:
        return OptionsModel.model_validate(options), noise_model
    except ValidationError as exc:
        raise ProgramError(f"Invalid noise learner options: {_first_error(exc)}") from None


def find_layers(circuits: Sequence[QuantumCircuit], strategy: str) -> list[_Layer]:
    """The unique layers of two-qubit gates in ``circuits``, most frequent first.

    Layers are the twirled boxes of samplomatic's boxing pass manager for ``strategy`` (IBM's
    ``twirling_strategy`` name); two boxes are the same layer when they twirl the same qubits and
    hold the same two-qubit gates. Ties are broken by the number of two-qubit gates (more first),
    then by first occurrence.
    """
    from samplomatic.transpiler import generate_boxing_pass_manager
    from samplomatic.utils import undress_box

    manager = generate_boxing_pass_manager(
        enable_gates=True,
        enable_measures=False,
        twirling_strategy=_STRATEGIES[strategy],
    )
    layers: dict[tuple[Any, ...], _Layer] = {}
    for circuit in circuits:
        boxed = manager.run(circuit)
        for instruction in boxed.data:
            if instruction.operation.name != "box":
                continue
            box = undress_box(instruction.operation)
            outer = [boxed.find_bit(q).index for q in instruction.qubits]
            inner = {q: outer[i] for i, q in enumerate(box.body.qubits)}
            gates = [
                (op.operation, tuple(inner[q] for q in op.qubits))
                for op in box.body.data
                if op.operation.num_qubits == 2 and op.operation.name != "barrier"
            ]
            if not gates:
                continue
            key = (
                tuple(sorted(outer)),
                tuple(sorted((op.name, qargs, tuple(map(str, op.params))) for op, qargs in gates)),
            )
            dressing = box_dressing(instruction.operation)
            layer = layers.setdefault(key, _Layer(sorted(outer), gates, dressing, first_seen=len(layers)))
            layer.count += 1
    return sorted(layers.values(), key=lambda layer: (-layer.count, -len(layer.gates), layer.first_seen))


def _pauli_list(noise: LayerNoise) -> Any:
    from qiskit.quantum_info import PauliList

    n = len(noise.qubits)
    labels = []
    for generator in noise.generators:
        label = ["I"] * n
        for q, p in generator:
            label[n - 1 - q] = p
        labels.append("".join(label))
    return PauliList(labels)


def run_noise_learner_v2(params: dict[str, Any], backend: str, engine: SimulationEngine) -> ProgramOutput:
    """``NoiseLearner`` params: circuits in, ``NoiseLearnerResult`` of ``LayerError`` out (as IBM encodes it).

    Raises:
        ProgramError: no circuits, a circuit wider than the backend, options the schema rejects.
    """
    from qiskit_ibm_runtime import RuntimeEncoder
    from qiskit_ibm_runtime.results import LayerError, PauliLindbladError

    circuits = _circuits(params, engine.num_qubits(backend))
    options, custom_model = _v2_options(params.get("options"))
    model = custom_model if custom_model is not None else backend_noise_model(backend)
    coupling = _coupling(backend)
    layers = find_layers(circuits, options.twirling_strategy)
    if options.max_layers_to_learn is not None:
        layers = layers[: options.max_layers_to_learn]
    data = []
    for layer in layers:
        noise = layer_noise(layer.qubits, layer.gates, model, coupling, dressing=layer.dressing)
        local = {q: i for i, q in enumerate(noise.qubits)}
        circuit = QuantumCircuit(len(noise.qubits))
        for operation, qargs in layer.gates:
            circuit.append(operation, [local[q] for q in qargs])
        error = PauliLindbladError(_pauli_list(noise), noise.rates)
        data.append(LayerError(circuit, noise.qubits, error))
    metadata = {
        "backend": backend,
        "input_options": {
            "max_layers_to_learn": options.max_layers_to_learn,
            "shots_per_randomization": options.shots_per_randomization,
            "num_randomizations": options.num_randomizations,
            "layer_pair_depths": list(options.layer_pair_depths),
            "twirling_strategy": options.twirling_strategy,
        },
    }
    warnings = [
        f"noise-learner: {len(data)} layer(s) computed from the "
        f"{'given' if custom_model is not None else 'backend'} noise model (Pauli-twirled gate errors), "
        "not learned by experiments; shots_per_randomization, num_randomizations and layer_pair_depths "
        "have no effect on a simulator."
    ]
    # IBM's ResultsModel (noise_learner_v2): {"data": [LayerError as "_json"], "metadata"} in
    # RuntimeEncoder JSON; the client's NoiseLearnerResultDecoder turns it into a
    # NoiseLearnerResult (it takes any text without "schema_version" for this format).
    text = json.dumps({"data": data, "metadata": metadata}, cls=RuntimeEncoder).encode()
    return ProgramOutput(text, warnings, len(circuits))


# --- NoiseLearnerV3 (ibm_quantum_schemas.noise_learner_v3 schemas) -------------------------------


def _physical_qubits(instruction: CircuitInstruction, width: int, index: int) -> list[int]:
    physical = {bit: i for i, bit in enumerate(QuantumRegister(width, "q"))}
    try:
        return [physical[q] for q in instruction.qubits]
    except KeyError:
        raise ProgramError(
            f"Instruction {index}: every qubit must be a qubit of the backend's register q ({width} qubits)."
        ) from None


def _lindblad_metadata(depths: Sequence[int], qubits: Sequence[int], post_selection: bool) -> dict[str, Any]:
    # No shot is simulated, so none is discarded: every depth keeps all its shots.
    return {
        "learning_protocol": "lindblad",
        "post_selection": {
            "fraction_kept": {depth: 1.0 for depth in depths},
            "success_rates": {depth: ({q: 1.0 for q in qubits} if post_selection else {}) for depth in depths},
        },
    }


def run_noise_learner_v3(params: dict[str, Any], backend: str, engine: SimulationEngine) -> ProgramOutput:
    """``NoiseLearnerV3`` params (any ``schema_version`` the client has converters for).

    Raises:
        ProgramError: unknown schema version, params the schema rejects, an instruction that is
            not a box on the backend's qubits or that no learning protocol covers.
    """
    from pydantic import ValidationError
    from qiskit.quantum_info import QubitSparsePauliList
    from qiskit_ibm_runtime.noise_learner_v3 import converters
    from qiskit_ibm_runtime.noise_learner_v3.find_learning_protocol import find_learning_protocol
    from qiskit_ibm_runtime.noise_learner_v3.learning_protocol import LearningProtocol
    from qiskit_ibm_runtime.noise_learner_v3.params_converters import NOISE_LEARNER_V3_PARAMS_CONVERTERS
    from qiskit_ibm_runtime.results import NoiseLearnerV3Result, NoiseLearnerV3Results
    from samplomatic import InjectNoise
    from samplomatic.utils import get_annotation, undress_box

    version = params.get("schema_version")
    converter = NOISE_LEARNER_V3_PARAMS_CONVERTERS.get(version) if isinstance(version, str) else None
    encode = getattr(converters, f"noise_learner_v3_result_to_{str(version)[1:].replace('.', '_')}", None)
    if converter is None or encode is None:
        raise ProgramError(
            f"Unsupported noise learner schema_version {version!r}; "
            f"this server accepts {sorted(NOISE_LEARNER_V3_PARAMS_CONVERTERS)}."
        )
    try:
        model_params = converter.model.model_validate(params)
    except ValidationError as exc:
        raise ProgramError(f"Invalid noise learner params ({version}): {_first_error(exc)}") from None
    except Exception as exc:  # corrupt base64/QPY inside validators
        raise ProgramError(f"Invalid noise learner params ({version}): {type(exc).__name__}: {exc}") from None
    try:
        instructions, options = converter.decoder(model_params)
    except Exception as exc:  # QPY decoding raises many types
        raise ProgramError(f"The instructions could not be decoded ({version}): {type(exc).__name__}: {exc}") from None
    if not instructions:
        raise ProgramError("params.instructions holds no instruction to learn.")

    width = engine.num_qubits(backend)
    model = backend_noise_model(backend)
    coupling = _coupling(backend)
    depths = list(options.layer_pair_depths)
    post_selection = bool(getattr(getattr(model_params.options, "post_selection", None), "enable", False))
    results = []
    for index, instruction in enumerate(instructions):
        if instruction.operation.name != "box":
            raise ProgramError(f"Instruction {index}: expected a 'box' but found '{instruction.operation.name}'.")
        qubits = _physical_qubits(instruction, width, index)
        try:
            protocol = find_learning_protocol(instruction)
        except Exception as exc:
            raise ProgramError(f"Instruction {index}: {exc}") from None
        box = undress_box(instruction.operation)
        inner = dict(zip(instruction.operation.body.qubits, qubits, strict=True))
        if protocol is LearningProtocol.PAULI_LINDBLAD:
            annotation = get_annotation(instruction.operation, InjectNoise)
            site = str(getattr(getattr(annotation, "site", None), "value", "after")).lower()
            body = [(op.operation, tuple(inner[q] for q in op.qubits)) for op in box.body.data]
            noise = layer_noise(qubits, body, model, coupling, site=site, dressing=box_dressing(instruction.operation))
            metadata = _lindblad_metadata(depths, noise.qubits, post_selection)
        elif protocol is LearningProtocol.TREX:
            measured = [inner[op.qubits[0]] for op in box.body.data if op.operation.name == "measure"]
            noise = readout_noise(measured, model)
            metadata = {
                "learning_protocol": "trex",
                "post_selection": {"fraction_kept": 1.0, "success_rates": {q: 1.0 for q in noise.qubits}},
            }
        else:
            raise ProgramError(
                f"Instruction {index} cannot be learned by any of the supported learning protocols "
                "(a layer of Clifford gates on distinct qubits, or one measurement per qubit)."
            )
        n = len(noise.qubits)
        generators = [
            QubitSparsePauliList.from_sparse_list([("".join(p for _, p in generator), [q for q, _ in generator])], n)
            for generator in noise.generators
        ]
        results.append(NoiseLearnerV3Result.from_generators(generators, noise.rates, metadata=metadata))
    text = encode(NoiseLearnerV3Results(results)).model_dump_json().encode()
    warnings = [
        f"noise-learner: {len(results)} instruction(s) computed from the backend noise model "
        "(Pauli-twirled gate errors, twirled readout errors), not learned by experiments."
    ]
    return ProgramOutput(text, warnings, len(results))


def run_noise_learner(
    params: dict[str, Any], backend: str, engine: SimulationEngine, defaults: Defaults
) -> ProgramOutput:
    """Program ``noise-learner``: ``NoiseLearnerV3`` params carry ``schema_version``, ``NoiseLearner``'s do not.

    Raises:
        ProgramError: the params cannot run (see ``run_noise_learner_v2`` / ``run_noise_learner_v3``).
    """
    if "schema_version" in params:
        return run_noise_learner_v3(params, backend, engine)
    return run_noise_learner_v2(params, backend, engine)
