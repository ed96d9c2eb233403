"""qiskit-aer engine: noisy simulation of a fake backend, on CPU or GPU.

The backend's noise model (``NoiseModel.from_backend`` on the client's fake backend, as local
testing mode builds it) is built once per backend. A circuit is split into groups of qubits
that never interact (``partition.py``); lone qubits are sampled exactly (``single_qubit.py``)
and each other group runs on Aer's ``SamplerV2``, compacted to its qubits with the noise model
cut down to them (``compaction.py``), all parameter bindings in one call. Results have the law
of local testing mode (``BackendSamplerV2``/``BackendEstimatorV2`` on the fake backend), which
the unit tests check statistically.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.primitives import PrimitiveResult, SamplerPubResult
from qiskit.primitives.containers import BitArray, DataBin
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import Kraus, SuperOp
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, QuantumError
from qiskit_aer.primitives import SamplerV2 as AerSamplerV2
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

from qiskit_runtime_server.worker.engines.circuit_key import fingerprint
from qiskit_runtime_server.worker.engines.clifford import (
    Approximation,
    clifford_bindings,
    is_pauli_mixture,
    pauli_twirl,
    snapped_circuits,
)
from qiskit_runtime_server.worker.engines.compaction import (
    Instruction,
    compact_circuit,
    error_table,
    reduce_noise_model,
    used_instructions,
)
from qiskit_runtime_server.worker.engines.estimation import estimate_pub, pauli_terms
from qiskit_runtime_server.worker.engines.factorized import sample_bits
from qiskit_runtime_server.worker.engines.light_cone import backward_cone, recorded_clbits, restrict
from qiskit_runtime_server.worker.engines.methods import (
    DENSITY_MATRIX_ADVANTAGE,
    KRAUS_MAX_QUBITS,
    SINGLE_THREAD_WORK,
    estimate_memory,
    max_statevector_qubits,
    mps_order,
    predict_seconds,
    run_options,
    samples_at_end,
)
from qiskit_runtime_server.worker.engines.partition import Component, noise_is_local
from qiskit_runtime_server.worker.engines.qubit_reuse import on_wires, schedule
from qiskit_runtime_server.worker.engines.report import SimulationReport
from qiskit_runtime_server.worker.engines.single_qubit import NoiseChannels
from qiskit_runtime_server.worker.engines.small_groups import MAX_QUBITS as SMALL_GROUP_QUBITS
from qiskit_runtime_server.worker.engines.small_groups import SmallGroupProgram, compile_small_group
from qiskit_runtime_server.worker.engines.stim_sampler import NoiseTable, translate
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.fractional import with_fractional_gates

# Distinct (backend, qubits, instructions) simulators kept per process.
SIMULATOR_CACHE_SIZE = 128
# Groups on reused wires kept per engine (a 100-node QAOA layer has ~90).
REUSE_CACHE_ENTRIES = 256


@cache
def fake_backend(name: str) -> FakeBackendV2:
    """The client's fake backend class for ``fake_<folder>``, instantiated once, with the
    fractional gates of its device (``worker/fractional.py``).

    Raises:
        ProgramError: no fake backend of that name ships with the installed client.
    """
    folder = name.removeprefix("fake_")
    try:
        module = importlib.import_module(f"qiskit_ibm_runtime.fake_provider.backends.{folder}")
    except ImportError:
        raise ProgramError(f"Backend {name} is not available on this worker.") from None
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, FakeBackendV2) and value is not FakeBackendV2:
            return with_fractional_gates(value())
    raise ProgramError(f"Backend {name} is not available on this worker.")


@cache
def backend_noise_model(name: str) -> NoiseModel:
    """The noise model of fake backend ``name`` built from its properties (cached per process)."""
    return NoiseModel.from_backend(fake_backend(name))


class AerEngine:
    """Runs PUBs for a backend with its (or a given) noise model, on CPU or GPU.

    Each circuit is split into independent qubit groups (``partition.py``) when the noise model
    is local; a lone qubit's outcomes are computed exactly (``single_qubit.py``), every other
    group runs on Aer compacted to its qubits, against a noise model holding only the errors of
    the instructions it applies (``compaction.py``), with all parameter bindings of the PUB in
    one Aer call. Simulators for the backend's own noise are cached per (backend, qubits,
    instructions). A noisy group runs as a density matrix where that is cheaper than
    trajectories (``DENSITY_MATRIX_ADVANTAGE``), with gate errors in Kraus form up to
    ``KRAUS_MAX_QUBITS`` qubits; otherwise Aer's automatic method, or one that scales.

    Args:
        device: ``"CPU"`` or ``"GPU"`` (qiskit-aer-gpu; one GPU per worker process).
        compact: simulate only the qubits a group uses (results are identical in law).
        factorize: split circuits into independent groups when the noise model allows it.
        memory_limit_mb: the most memory one simulation may take (Aer's ``max_memory_mb``); a
            group whose state cannot fit runs with a method that scales, or fails the job.
            ``None``: :func:`default_memory_limit_mb`.
    """

    def __init__(
        self, device: str = "CPU", compact: bool = True, factorize: bool = True, memory_limit_mb: int | None = None
    ) -> None:
        self.device = device.upper()
        self.compact = compact
        self.factorize = factorize
        self.memory_limit_mb = memory_limit_mb or default_memory_limit_mb()
        self._simulators: OrderedDict[tuple[object, ...], tuple[AerSimulator, bool]] = OrderedDict()
        self._kraus_errors: dict[tuple[str, str, tuple[int, ...]], QuantumError] = {}
        self._twirled: dict[tuple[str, str, tuple[int, ...]], tuple[QuantumError, float]] = {}
        self._channels: dict[str, NoiseChannels] = {}
        self._reused: OrderedDict[Hashable, tuple[QuantumCircuit, AerSimulator] | None] = OrderedDict()
        self._custatevec = self.device == "GPU"
        # What the current job ran (methods, approximations, predicted time); see begin_job.
        self.report = SimulationReport()
        self.max_job_seconds: float | None = None

    @property
    def cached_groups(self) -> int:
        """Groups on reused wires whose schedule and explicit errors this engine keeps."""
        return len(self._reused)

    def begin_job(self, max_seconds: float | None = None) -> SimulationReport:
        """Start a job's report; ``max_seconds`` fails the job before any run predicted to take it
        past that many seconds of simulation in all (``ProgramError`` naming the prediction)."""
        self.report = SimulationReport()
        self.max_job_seconds = max_seconds
        for key in [key for key in self._twirled if key[0] == ""]:
            del self._twirled[key]
        return self.report

    def num_qubits(self, backend_name: str) -> int:
        return int(fake_backend(backend_name).num_qubits)

    def _new_simulator(self, noise_model: NoiseModel) -> AerSimulator:
        return AerSimulator(noise_model=noise_model, device=self.device, max_memory_mb=self.memory_limit_mb)

    def _reduce(
        self,
        model: NoiseModel,
        backend_name: str | None,
        keep: Sequence[int],
        used: frozenset[Instruction],
        form: str,
    ) -> NoiseModel | None:
        """``model`` cut down to ``keep`` and ``used``; ``form`` is ``"exact"``, ``"kraus"``
        (gate errors as one Kraus channel each) or ``"pauli"`` (errors the stabilizer method cannot
        apply replaced by their Pauli twirl, see ``clifford.py``)."""
        if form == "exact":
            return reduce_noise_model(model, keep, used)
        source = backend_name or ""
        if form == "pauli":
            # A job's explicit model is cached under source "" for that job only (begin_job).
            twirled = self._twirled

            def twirl(name: str, qubits: tuple[int, ...], error: QuantumError) -> QuantumError:
                if is_pauli_mixture(error):
                    return error
                if (source, name, qubits) not in twirled:
                    approximation = pauli_twirl(error)
                    twirled[(source, name, qubits)] = (approximation.error, approximation.distance)
                return twirled[(source, name, qubits)][0]

            return reduce_noise_model(model, keep, used, twirl)
        return reduce_noise_model(model, keep, used, self._kraus_transform(model, backend_name, used))

    def _kraus_transform(
        self, model: NoiseModel, backend_name: str | None, used: frozenset[Instruction]
    ) -> Callable[[str, tuple[int, ...], QuantumError], QuantumError]:
        """Each error of ``used`` in Kraus form: the missing ones converted in one Aer call and
        cached per backend (an explicit model's only for this call)."""
        source = backend_name or ""
        local = getattr(model, "_local_quantum_errors", {})
        cache = self._kraus_errors if backend_name is not None else {}
        missing = [
            (name, qubits, local[name][qubits])
            for name, qubits in used
            if qubits in local.get(name, {}) and (source, name, qubits) not in cache
        ]
        for (name, qubits, _), converted in zip(missing, kraus_forms([e for _, _, e in missing]), strict=True):
            cache[(source, name, qubits)] = converted

        def transform(name: str, qubits: tuple[int, ...], error: QuantumError) -> QuantumError:
            return cache.get((source, name, qubits)) or error

        return transform

    def noise_channels(self, backend_name: str, noise_model: NoiseModel | None) -> NoiseChannels:
        """Single-qubit noise of the backend (cached) or of an explicit model (this job only)."""
        if noise_model is not None:
            return NoiseChannels(noise_model)
        if backend_name not in self._channels:
            self._channels[backend_name] = NoiseChannels(backend_noise_model(backend_name))
        return self._channels[backend_name]

    def simulator(
        self,
        backend_name: str,
        noise_model: NoiseModel | None,
        keep: Sequence[int],
        used: frozenset[Instruction],
        form: str = "exact",
    ) -> tuple[AerSimulator, bool]:
        """The simulator for a group on physical qubits ``keep`` applying ``used``, and whether it
        expects the group compacted to ``len(keep)`` qubits (``False``: the full circuit).
        ``form`` is how its gate errors are given (see :meth:`_reduce`).

        The backend's own noise model gives cached simulators; an explicit model (an option of
        this one job) gives a fresh one.
        """
        if noise_model is not None:
            reduced = self._reduce(noise_model, None, keep, used, form) if self.compact else None
            return (
                (self._new_simulator(noise_model), False) if reduced is None else (self._new_simulator(reduced), True)
            )
        key = (backend_name, tuple(keep), used, self.compact, form)
        cached = self._simulators.get(key)
        if cached is None:
            model = backend_noise_model(backend_name)
            reduced = self._reduce(model, backend_name, keep, used, form) if self.compact else None
            cached = (self._new_simulator(reduced if reduced is not None else model), reduced is not None)
            self._simulators[key] = cached
            if len(self._simulators) > SIMULATOR_CACHE_SIZE:
                self._simulators.popitem(last=False)
        else:
            self._simulators.move_to_end(key)
        return cached

    def _configure(self, sim: AerSimulator, circuit: QuantumCircuit, work: float, density: bool) -> str:
        """Set this run's options on a (shared, cached) simulator; return the method."""
        options = run_options(
            circuit,
            noisy=_noisy(sim),
            density=density,
            work=work,
            device=self.device,
            memory_limit_mb=self.memory_limit_mb,
            custatevec=self._custatevec,
        )
        sim.set_options(**options)
        return str(options["method"])

    def _admit(
        self,
        method: str,
        circuit: QuantumCircuit,
        shots: int,
        experiments: int,
        keep: Sequence[int],
        noisy: bool,
        steps: SmallGroupProgram | None = None,
    ) -> None:
        """Add one run's predicted time to the job's; fail the job if that passes its cap.
        ``method`` ``"stim"`` is reported as the stabilizer method, ``"small_group"`` (the
        numpy density matrix of ``steps``) as a density matrix.

        Raises:
            ProgramError: the job's predicted simulation time exceeds ``max_job_seconds``.
        """
        if steps is not None:
            seconds = steps.predicted_seconds(shots)
        else:
            seconds = predict_seconds(method, circuit, shots, experiments, noisy)
        reported = {"stim": "stabilizer", "small_group": "density_matrix"}.get(method, method)
        self.report.add_run(reported, len(keep), seconds)
        if method == "stim":
            self.report.stim_runs += 1
        cap = self.max_job_seconds
        if cap is not None and self.report.predicted_seconds > cap:
            raise ProgramError(
                f"The job is predicted to run for about {self.report.predicted_seconds:.3g} s of simulation, "
                f"more than its limit of {cap:.3g} s (the simulation of qubits {sorted(keep)} alone, "
                f"{len(keep)} qubits with method {method}, about {seconds:.3g} s)."
            )

    def _stabilizer_group(
        self,
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
        sim, compacted = self.simulator(backend_name, noise_model, keep, used, form="pauli")
        reduced = sim.options.noise_model
        if not compacted or not _stabilizer_noise(reduced):
            return None
        experiment_shots = shots if sub.num_parameters else shots * values.shape[0]
        noisy = not model.is_ideal()
        if noisy:
            self.report.add_approximation(self._approximation(backend_name, noise_model, sub, keep))
        return StabilizerRun(circuits, experiment_shots, sim, noisy)

    def _sample_stabilizer(self, run: StabilizerRun, keep: list[int], seed: int) -> np.ndarray | None:
        """Bits ``(experiments * shots, clbits)`` of a stabilizer run sampled with Stim's Pauli
        frames (``stim_sampler.py``), or ``None`` when its noise model holds something Stim
        cannot take; then the run's simulator is set up for Aer's stabilizer method."""
        noise = NoiseTable(run.simulator.options.noise_model if run.noisy else None)
        translated = [translate(circuit, noise) for circuit in run.circuits]
        sub = run.circuits[0]
        if all(t is not None for t in translated):
            self._admit("stim", sub, run.shots, len(run.circuits), keep, noisy=run.noisy)
            return np.concatenate([t.sample(run.shots, seed + i) for i, t in enumerate(translated) if t is not None])
        self._admit("stabilizer", sub, run.shots, len(run.circuits), keep, noisy=run.noisy)
        run.simulator.set_options(method="stabilizer", device="CPU", max_parallel_threads=0)
        run.circuits = snapped_circuits(run.circuits)
        return None

    def _approximation(
        self, backend_name: str, noise_model: NoiseModel | None, sub: QuantumCircuit, keep: Sequence[int]
    ) -> Approximation:
        """Which errors of a stabilizer run were twirled, and the bound on any expectation value."""
        source = "" if noise_model is not None else backend_name
        errors: dict[tuple[str, tuple[int, ...]], float] = {}
        bound = 0.0
        for instruction in sub.data:
            qubits = tuple(keep[sub.find_bit(q).index] for q in instruction.qubits)
            entry = self._twirled.get((source, instruction.operation.name, qubits))
            if entry is not None:
                errors[(instruction.operation.name, qubits)] = entry[1]
                bound += entry[1]
        return Approximation(errors, bound)

    def _reuse_group(
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
            found = self._reused[key]
        else:
            found = self._schedule_group(backend_name, noise_model, sub, keep, used)
            if key is not None:
                self._reused[key] = found
                while len(self._reused) > REUSE_CACHE_ENTRIES:
                    self._reused.popitem(last=False)
        if found is not None:
            self.report.reused += 1
        return found

    def _schedule_group(
        self,
        backend_name: str,
        noise_model: NoiseModel | None,
        sub: QuantumCircuit,
        keep: list[int],
        used: frozenset[Instruction],
    ) -> tuple[QuantumCircuit, AerSimulator] | None:
        plan = schedule(sub, max_width=KRAUS_MAX_QUBITS)
        if plan is None:
            return None
        model = noise_model if noise_model is not None else backend_noise_model(backend_name)
        source = backend_name if noise_model is None else None
        table = error_table(model, keep, used, self._kraus_transform(model, source, used))
        if table is None:
            return None
        circuit, readout = on_wires(sub, plan, table)
        sim = AerSimulator(noise_model=readout, method="density_matrix", max_memory_mb=self.memory_limit_mb)
        sim.set_options(device="CPU", max_parallel_threads=1 if 4.0**plan.width < SINGLE_THREAD_WORK else 0)
        return circuit, sim

    def run_group(
        self,
        backend_name: str,
        noise_model: NoiseModel | None,
        circuit: QuantumCircuit,
        group: Component,
        values: np.ndarray,
        columns: Mapping[Parameter, int],
        shots: int,
        seed: int,
    ) -> np.ndarray:
        """Bits ``(bindings, shots, len(group.clbits))`` of one group, from one Aer call.

        A group without parameters runs once with ``bindings * shots`` shots (every binding has
        the same law); otherwise all bindings go to Aer as parameter binds. A noisy group wider
        than ``KRAUS_MAX_QUBITS`` that is Clifford at every binding runs on the stabilizer
        method, one bound circuit per binding, with Pauli-twirled noise (``clifford.py``).

        Raises:
            ProgramError: Aer cannot run the group (for example, it does not fit in memory), or
                the job's predicted time passes its cap.
        """
        if 2 <= len(group.qubits) <= SMALL_GROUP_QUBITS and not group.control_flow:
            small = compile_small_group(
                circuit, group.qubits, group.clbits, self.noise_channels(backend_name, noise_model), values, columns
            )
            if small is not None:
                self._admit("small_group", circuit, shots, values.shape[0], list(group.qubits), noisy=True, steps=small)
                return small.sample(shots, np.random.default_rng(seed), len(group.clbits))
        keep = list(group.qubits)
        sub = compact_circuit(circuit, keep, others="drop")
        used = frozenset((name, tuple(keep[i] for i in qubits)) for name, qubits in used_instructions([sub]))
        bindings = values.shape[0]
        sub_values = values[:, [columns[p] for p in sub.parameters]]
        experiment_shots = shots if sub.num_parameters else shots * bindings
        limit = self.memory_limit_mb * 2**20
        model = noise_model if noise_model is not None else backend_noise_model(backend_name)
        width = len(keep)
        pubs = None
        wide = width > KRAUS_MAX_QUBITS and self.compact
        wide_noisy = wide and not model.is_ideal()
        reuse = self._reuse_group(backend_name, noise_model, sub, keep, used) if wide_noisy else None
        if reuse is not None:
            sub, sim = reuse
            method = "density_matrix"
            experiments = bindings if sub.num_parameters else 1
            if sub.num_qubits <= SMALL_GROUP_QUBITS:
                # Few wires: the batched numpy density matrix, errors as the circuit states them.
                wires = tuple(range(sub.num_qubits))
                readout = NoiseChannels(sim.options.noise_model)
                clbits = tuple(range(sub.num_clbits))
                small = compile_small_group(sub, wires, clbits, readout, sub_values, _columns(sub))
                if small is not None:
                    self._admit("small_group", sub, shots, bindings, keep, noisy=True, steps=small)
                    bits = small.sample(shots, np.random.default_rng(seed), len(clbits))
                    return bits[:, :, _positions(circuit, sub, group)]
            _parallel_bindings(sim, 4.0**sub.num_qubits, experiments)
            self._admit(method, sub, experiment_shots, experiments, keep, noisy=True)
            pubs = [_sampler_pub(sub, sub_values, shots, bindings)]
        elif wide:
            stabilizer = self._stabilizer_group(backend_name, noise_model, sub, keep, used, sub_values, shots)
            if stabilizer is not None:
                sampled = self._sample_stabilizer(stabilizer, keep, seed)
                if sampled is not None:
                    return _group_bits(circuit, stabilizer.circuits[0], sampled, bindings, shots, group)
                sim, method = stabilizer.simulator, "stabilizer"
                pubs = [SamplerPub(c, BindingsArray(), stabilizer.shots, validate=False) for c in stabilizer.circuits]
        if pubs is None:
            density = (
                not model.is_ideal()
                and 4.0**width < DENSITY_MATRIX_ADVANTAGE * experiment_shots * 2.0**width
                and 16 * 4.0**width <= limit
                and samples_at_end(sub)
            )
            if not density and width > max_statevector_qubits(self.memory_limit_mb, self.device):
                # A matrix product state: lay the qubits along the circuit's interactions.
                keep = [keep[i] for i in mps_order(sub, list(range(width)))]
                sub = compact_circuit(circuit, keep, others="drop")
            form = "kraus" if density and width <= KRAUS_MAX_QUBITS else "exact"
            sim, compacted = self.simulator(backend_name, noise_model, keep, used, form=form)
            if not compacted:
                sub = circuit
                density = False
            work = 4.0**sub.num_qubits if density else experiment_shots * 2.0**sub.num_qubits
            method = self._configure(sim, sub, work, density)
            needed = estimate_memory(sub, method)
            if needed > limit:
                raise ProgramError(
                    f"The simulation of qubits {sorted(keep)} ({len(keep)} interacting qubits) would need about "
                    f"{needed / 2**30:.3g} GiB with method {method}, more than the {limit / 2**30:.3g} GiB one "
                    "job may use (QRS_JOB_MEMORY_LIMIT)."
                )
            experiments = bindings if sub.num_parameters else 1
            _parallel_bindings(sim, work, experiments)
            self._admit(method, sub, experiment_shots, experiments, keep, noisy=not model.is_ideal())
            pubs = [_sampler_pub(sub, sub_values, shots, bindings)]
        sampler = AerSamplerV2.from_backend(sim, seed=seed)
        try:
            try:
                results = sampler.run(pubs).result()
            except Exception as exc:
                if not (sim.options.get("cuStateVec_enable") and "custatevec" in str(exc).lower()):
                    raise
                self._custatevec = False  # this qiskit-aer-gpu build has no cuQuantum
                sim.set_options(cuStateVec_enable=False)
                results = sampler.run(pubs).result()
        except Exception as exc:  # Aer reports memory and method failures as exceptions
            raise ProgramError(
                f"The simulation of qubits {sorted(keep)} ({len(keep)} qubits, method {method}) failed: "
                f"{_plain(str(exc))}"
            ) from None
        bits = np.zeros((bindings, shots, circuit.num_clbits), dtype=bool)
        for register in sub.cregs:
            indices = [circuit.find_bit(bit).index for bit in register]
            recorded = [result.data[register.name].to_bool_array(order="little") for result in results]
            bits[:, :, indices] = np.concatenate(recorded).reshape(bindings, shots, -1)
        return bits[:, :, list(group.clbits)]

    def sample_bits(
        self,
        backend_name: str,
        circuit: QuantumCircuit,
        parameter_values: BindingsArray,
        shots: int,
        noise_model: NoiseModel | None,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Measured bits ``(bindings, shots, circuit.num_clbits)``, bindings flattened in C order."""
        parameters = circuit.parameters
        if parameters:
            values = parameter_values.as_array(parameters).reshape(-1, len(parameters))
        else:
            values = np.zeros((parameter_values.size, 0))
        model = noise_model if noise_model is not None else backend_noise_model(backend_name)
        local = noise_is_local(model)
        if local:
            # Only the light cone of the recorded bits can change them (light_cone.py).
            cone = backward_cone(circuit, clbits=recorded_clbits(circuit))
            if cone is not None and len(cone.instructions) < len(circuit.data):
                reduced = restrict(circuit, cone)
                position = {parameter: i for i, parameter in enumerate(parameters)}
                values = values[:, [position[p] for p in reduced.parameters]]
                circuit = reduced
        return sample_bits(
            circuit,
            values,
            shots,
            self.noise_channels(backend_name, noise_model),
            partial(self.run_group, backend_name, noise_model),
            rng,
            factorize=self.factorize and local,
        )

    def sample(
        self,
        backend_name: str,
        pubs: list[SamplerPub],
        *,
        shots: int,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> PrimitiveResult:
        """``PrimitiveResult`` of ``SamplerPubResult`` s: one ``BitArray`` per classical register,
        shaped like the PUB's bindings, as ``BackendSamplerV2`` returns them."""
        rng = np.random.default_rng(seed)
        results = []
        for pub in pubs:
            circuit = pub.circuit
            pub_shots = pub.shots if pub.shots is not None else shots
            shape = pub.parameter_values.shape
            registers = self._registers(backend_name, pub, pub_shots, noise_model, rng)
            data = {name: BitArray.from_bool_array(bits, order="little") for name, bits in registers.items()}
            results.append(
                SamplerPubResult(
                    DataBin(**data, shape=shape),
                    metadata={"shots": pub_shots, "circuit_metadata": circuit.metadata},
                )
            )
        return PrimitiveResult(results, metadata={"version": 2})

    def sample_registers(
        self,
        backend_name: str,
        pub: SamplerPub,
        *,
        shots: int,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> dict[str, np.ndarray]:
        """Each classical register's bits ``(*pub shape, shots, register size)`` (bool, bit 0
        first, as ``BitArray.to_bool_array(order="little")``): :meth:`sample` without packing
        the bits into ``BitArray`` s, for callers that need them unpacked (the executor)."""
        pub_shots = pub.shots if pub.shots is not None else shots
        return self._registers(backend_name, pub, pub_shots, noise_model, np.random.default_rng(seed))

    def _registers(
        self, backend_name: str, pub: SamplerPub, shots: int, noise_model: NoiseModel | None, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        circuit = pub.circuit
        shape = pub.parameter_values.shape
        bits = self.sample_bits(backend_name, circuit, pub.parameter_values, shots, noise_model, rng)
        out = {}
        for register in circuit.cregs:
            indices = [circuit.find_bit(bit).index for bit in register]
            if indices == list(range(indices[0] if indices else 0, (indices[0] if indices else 0) + len(indices))):
                # A register of consecutive bits (the usual case): a view, not a copy.
                selected = bits[:, :, indices[0] : indices[0] + len(indices)] if indices else bits[:, :, :0]
            else:
                selected = bits[:, :, indices]
            out[register.name] = selected.reshape(*shape, shots, len(indices))
        return out

    def estimate(
        self,
        backend_name: str,
        pubs: list[EstimatorPub],
        *,
        precision: float,
        seed: int | None,
        noise_model: NoiseModel | None,
    ) -> PrimitiveResult:
        """``PrimitiveResult`` of ``PubResult`` s with ``evs``/``stds`` (``estimation.py``)."""
        rng = np.random.default_rng(seed)
        basis_gates = tuple(fake_backend(backend_name).operation_names)
        results = []
        for pub in pubs:
            terms = pauli_terms(pub)
            if terms is None:
                raise ProgramError("Observables must be sums of Pauli strings (I, X, Y, Z) on this server.")
            first_new = pub.circuit.num_clbits

            def sample(
                circuit: QuantumCircuit, shots: int, pub: EstimatorPub = pub, first: int = first_new
            ) -> np.ndarray:
                bits = self.sample_bits(backend_name, circuit, pub.parameter_values, shots, noise_model, rng)
                return bits[:, :, first:]

            results.append(estimate_pub(pub, terms, basis_gates, sample))
        return PrimitiveResult(results, metadata={"version": 2})


# Gates that map Pauli operators to Pauli operators (rz only at multiples of pi/2).
_SUPEROP_SIMULATOR = AerSimulator(method="superop")


def kraus_forms(errors: Sequence[QuantumError]) -> list[QuantumError]:
    """Each error as one Kraus channel, the same channel (to ~1e-10).

    Aer computes the superoperators (one call for all errors): for a two-qubit error of
    ``NoiseModel.from_backend`` (a mixture of ~150 circuits) that takes ~6 ms instead of the
    ~40 ms of composing it in Python with ``quantum_info``.
    """
    if not errors:
        return []
    circuits = []
    for error in errors:
        circuit = QuantumCircuit(error.num_qubits)
        circuit.append(error, range(error.num_qubits))
        circuit.save_superop()
        circuits.append(circuit)
    result = _SUPEROP_SIMULATOR.run(circuits, shots=1).result()
    return [QuantumError(Kraus(SuperOp(result.data(i)["superop"]))) for i in range(len(circuits))]


def default_memory_limit_mb() -> int:
    """Half of this machine's physical memory, in MiB: the default share of one job."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return max(256, total // 2 // 2**20)


def _sampler_pub(circuit: QuantumCircuit, values: np.ndarray, shots: int, bindings: int) -> SamplerPub:
    """One Aer PUB for a group: all bindings as parameter binds, or ``bindings * shots`` shots of
    a circuit without parameters (every binding has the same law)."""
    if circuit.num_parameters:
        return SamplerPub(circuit, BindingsArray({tuple(circuit.parameters): values}), shots, validate=False)
    return SamplerPub(circuit, BindingsArray(), shots * bindings, validate=False)


def _columns(circuit: QuantumCircuit) -> dict[Parameter, int]:
    """Each parameter of ``circuit`` and its column in values given in ``circuit.parameters`` order."""
    return {parameter: i for i, parameter in enumerate(circuit.parameters)}


def _positions(circuit: QuantumCircuit, sub: QuantumCircuit, group: Component) -> list[int]:
    """Where each of ``group``'s classical bits (indices of ``circuit``) sits among ``sub``'s."""
    index = {circuit.find_bit(bit).index: i for i, bit in enumerate(sub.clbits)}
    return [index[c] for c in group.clbits]


def _parallel_bindings(sim: AerSimulator, work: float, experiments: int) -> None:
    """Run the bindings of a run side by side when each is too small for threads of its own
    but together they are not (a 6-wire density matrix with 128 bindings: 1.5x faster on 2
    cores); otherwise one binding after another, as Aer does by default."""
    small = work < SINGLE_THREAD_WORK
    if small and experiments > 1 and work * experiments >= PARALLEL_BINDINGS_WORK:
        sim.set_options(max_parallel_threads=0, max_parallel_experiments=0)
    else:
        sim.set_options(max_parallel_experiments=1)


# Total amplitudes per instruction (work x bindings) from which bindings run side by side.
PARALLEL_BINDINGS_WORK = 2.0**20


@dataclass
class StabilizerRun:
    """A noisy Clifford group ready to sample: one bound circuit per experiment, ``shots`` each,
    and the simulator holding its (twirled, compacted) noise model."""

    circuits: list[QuantumCircuit]
    shots: int
    simulator: AerSimulator
    noisy: bool


def _group_bits(
    circuit: QuantumCircuit, sub: QuantumCircuit, sampled: np.ndarray, bindings: int, shots: int, group: Component
) -> np.ndarray:
    """``sampled`` (``(bindings * shots, sub.num_clbits)``, experiments in binding order) as the
    group's bits ``(bindings, shots, len(group.clbits))`` of ``circuit``."""
    bits = np.zeros((bindings, shots, circuit.num_clbits), dtype=bool)
    indices = [circuit.find_bit(bit).index for bit in sub.clbits]
    bits[:, :, indices] = sampled.reshape(bindings, shots, -1)
    return bits[:, :, list(group.clbits)]


def _stabilizer_noise(model: NoiseModel | None) -> bool:
    """Whether every gate error of ``model`` is a Pauli mixture (after twirling)."""
    if model is None:
        return True
    local = getattr(model, "_local_quantum_errors", None)
    default = getattr(model, "_default_quantum_errors", None)
    if local is None or default is None:
        return False
    errors = [error for by_qubits in local.values() for error in by_qubits.values()] + list(default.values())
    return all(is_pauli_mixture(error) for error in errors)


def _noisy(sim: AerSimulator) -> bool:
    model = sim.options.noise_model
    return model is not None and not model.is_ideal()


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(message: str) -> str:
    """An Aer error message without terminal colour codes, on one line."""
    return " ".join(_ANSI.sub("", message).split())


@cache
def engine_for(device: str, memory_limit_mb: int | None = None) -> AerEngine:
    """One engine per device per process, so its caches live as long as the process."""
    return AerEngine(device, memory_limit_mb=memory_limit_mb)
