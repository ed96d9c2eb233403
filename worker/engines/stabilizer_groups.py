"""Noisy Clifford groups of any width: each binding bound, the noise twirled to Pauli channels.

A group that is Clifford at every binding runs on a stabilizer simulation (Stim's Pauli frames,
``stim_sampler.py``, or Aer's stabilizer method) with each error the stabilizer method cannot
apply replaced by its Pauli twirl (``clifford.py``); the approximation and its bound go to the
job's report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel

from qiskit_runtime_server.worker.engines.clifford import clifford_bindings, is_pauli_mixture
from qiskit_runtime_server.worker.engines.compaction import Instruction
from qiskit_runtime_server.worker.engines.fake_backends import backend_noise_model
from qiskit_runtime_server.worker.engines.noise_forms import NoiseForms
from qiskit_runtime_server.worker.engines.partition import Component
from qiskit_runtime_server.worker.engines.report import SimulationReport


@dataclass
class StabilizerRun:
    """A noisy Clifford group ready to sample: one bound circuit per experiment, ``shots`` each,
    and the simulator holding its (twirled, compacted) noise model."""

    circuits: list[QuantumCircuit]
    shots: int
    simulator: AerSimulator
    noisy: bool


def group_bits(
    circuit: QuantumCircuit, sub: QuantumCircuit, sampled: np.ndarray, bindings: int, shots: int, group: Component
) -> np.ndarray:
    """``sampled`` (``(bindings * shots, sub.num_clbits)``, experiments in binding order) as the
    group's bits ``(bindings, shots, len(group.clbits))`` of ``circuit``."""
    bits = np.zeros((bindings, shots, circuit.num_clbits), dtype=bool)
    indices = [circuit.find_bit(bit).index for bit in sub.clbits]
    bits[:, :, indices] = sampled.reshape(bindings, shots, -1)
    return bits[:, :, list(group.clbits)]


def stabilizer_noise(model: NoiseModel | None) -> bool:
    """Whether every gate error of ``model`` is a Pauli mixture (after twirling)."""
    if model is None:
        return True
    local = getattr(model, "_local_quantum_errors", None)
    default = getattr(model, "_default_quantum_errors", None)
    if local is None or default is None:
        return False
    errors = [error for by_qubits in local.values() for error in by_qubits.values()] + list(default.values())
    return all(is_pauli_mixture(error) for error in errors)


def stabilizer_group(
noise: NoiseForms,
report: SimulationReport,
    backend_name: str,
    noise_model: NoiseModel | None,
    sub: QuantumCircuit,
    keep: list[int],
    used: frozenset[Instruction],
    values: np.ndarray,
    shots: int,
) -> StabilizerRun | None:
    """The noisy Clifford group ``sub`` bound to each binding, with its Pauli-twirled noise, or
    ``None`` when that does not apply (not Clifford at every binding, delays under a
    relaxation pass, errors no twirl can make Pauli)."""
    circuits = clifford_bindings(sub, values)
    if circuits is None:
        return None
    model = noise_model if noise_model is not None else backend_noise_model(backend_name)
    if getattr(model, "_custom_noise_passes", None) and any(i.operation.name == "delay" for i in sub.data):
        return None  # the relaxation pass would add thermal (Kraus) errors on the delays
    sim, compacted = noise.simulator(backend_name, noise_model, keep, used, form="pauli")
    reduced = sim.options.noise_model
    if not compacted or not stabilizer_noise(reduced):
        return None
    experiment_shots = shots if sub.num_parameters else shots * values.shape[0]
    noisy = not model.is_ideal()
    if noisy:
        report.add_approximation(noise.approximation(backend_name, noise_model, sub, keep))
    return StabilizerRun(circuits, experiment_shots, sim, noisy)
