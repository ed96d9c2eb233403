"""The ``noise-learner`` program: ``NoiseLearner`` (v2 params) and ``NoiseLearnerV3`` (schema params).

This module picks the params format; ``noise_learner_v2.py`` and ``noise_learner_v3.py`` read
them and build the answers, ``noise_learner_fit.py`` computes the noise models.

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

from typing import Any

from qiskit_runtime_server.worker.engines.base import SimulationEngine
from qiskit_runtime_server.worker.jobspec import Defaults
from qiskit_runtime_server.worker.programs.noise_learner_fit import (
    Dressing,
    LayerNoise,
    NoisyInstruction,
    fit_pauli_lindblad,
    layer_noise,
    pauli_fidelities,
    readout_noise,
)
from qiskit_runtime_server.worker.programs.noise_learner_v2 import run_noise_learner_v2
from qiskit_runtime_server.worker.programs.noise_learner_v3 import run_noise_learner_v3
from qiskit_runtime_server.worker.programs.primitives import ProgramOutput
from qiskit_runtime_server.worker.programs.served import served_backend

__all__ = [
    "Dressing",
    "LayerNoise",
    "NoisyInstruction",
    "fit_pauli_lindblad",
    "layer_noise",
    "pauli_fidelities",
    "readout_noise",
    "run_noise_learner",
    "run_noise_learner_v2",
    "run_noise_learner_v3",
]


def run_noise_learner(
    params: dict[str, Any], backend: str, engine: SimulationEngine, defaults: Defaults
) -> ProgramOutput:
    """Program ``noise-learner``: ``NoiseLearnerV3`` params carry ``schema_version``, ``NoiseLearner``'s do not.

    ``backend`` may be any served name (``ibm_sherbrooke`` learns ``fake_sherbrooke``'s noise).

    Raises:
        ProgramError: an unknown backend name, or params that cannot run (see
            ``run_noise_learner_v2`` / ``run_noise_learner_v3``).
    """
    backend = served_backend(backend).simulated
    if "schema_version" in params:
        return run_noise_learner_v3(params, backend, engine)
    return run_noise_learner_v2(params, backend, engine)
