"""Wide noisy groups on few wires (``qubit_reuse.py``), with what each needs kept per structure.

A group that can be scheduled onto at most ``KRAUS_MAX_QUBITS`` wires runs there as an exact
density matrix, each instruction's error explicit in the circuit. A loop's jobs send the same
circuit with new values, so with the backend's own noise model the schedule and the explicit
errors are kept per (backend, structure of the group, qubits, instructions): the structure is
``circuit_key.fingerprint``, which parameter values are not part of.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel

from qiskit_runtime_server.worker.engines.circuit_key import fingerprint
from qiskit_runtime_server.worker.engines.compaction import Instruction, error_table
from qiskit_runtime_server.worker.engines.fake_backends import backend_noise_model
from qiskit_runtime_server.worker.engines.methods import KRAUS_MAX_QUBITS, SINGLE_THREAD_WORK
from qiskit_runtime_server.worker.engines.noise_forms import NoiseForms
from qiskit_runtime_server.worker.engines.qubit_reuse import on_wires, schedule

# Groups kept per engine (a 100-node QAOA layer has ~90).
REUSE_CACHE_ENTRIES = 256


class ReusedWires:
    """The reused-wire runs of one engine and their cache (``AerEngine`` holds one)."""

    def __init__(self, noise: NoiseForms) -> None:
        self.noise = noise
        self._reused: OrderedDict[Hashable, tuple[QuantumCircuit, AerSimulator] | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._reused)

    def group(
        self,
        backend_name: str,
        noise_model: NoiseModel | None,
        sub: QuantumCircuit,
        keep: list[int],
        used: frozenset[Instruction],
    ) -> tuple[QuantumCircuit, AerSimulator] | None:
        """The group on few wires with its errors explicit (``qubit_reuse.py``) and a density-matrix
        simulator for it, or ``None`` when its qubits cannot be scheduled onto at most
        ``KRAUS_MAX_QUBITS`` wires."""
        # A loop's jobs send the same circuit with new values: with the backend's own noise, the
        # schedule and the explicit errors depend on the group's structure alone.
        structure = fingerprint(sub) if noise_model is None else None
        key = None if structure is None else (backend_name, structure, tuple(keep), used)
        if key is not None and key in self._reused:
            self._reused.move_to_end(key)
            return self._reused[key]
        model = noise_model if noise_model is not None else backend_noise_model(backend_name)
        found = self._schedule(sub, keep, used, model, backend_name if noise_model is None else None)
        if key is not None:
            self._reused[key] = found
            while len(self._reused) > REUSE_CACHE_ENTRIES:
                self._reused.popitem(last=False)
        return found

    def _schedule(
        self, sub: QuantumCircuit, keep: list[int], used: frozenset[Instruction], model: NoiseModel, source: str | None
    ) -> tuple[QuantumCircuit, AerSimulator] | None:
        """The uncached :meth:`group`; ``source`` names the backend whose Kraus forms are cached."""
        plan = schedule(sub, max_width=KRAUS_MAX_QUBITS)
        if plan is None:
            return None
        table = error_table(model, keep, used, self.noise.kraus_transform(model, source, used))
        if table is None:
            return None
        circuit, readout = on_wires(sub, plan, table)
        sim = AerSimulator(noise_model=readout, method="density_matrix", max_memory_mb=self.noise.memory_limit_mb)
        sim.set_options(device="CPU", max_parallel_threads=1 if 4.0**plan.width < SINGLE_THREAD_WORK else 0)
        return circuit, sim
