"""qiskit-aer engine: noisy simulation of a fake backend, on CPU or GPU.

The backend's noise model (``NoiseModel.from_backend`` on the client's fake backend, as local
testing mode builds it) is built once per backend. A circuit is split into groups of qubits
that never interact (``partition.py``); lone qubits are sampled exactly (``single_qubit.py``)
and each other group runs on Aer's ``SamplerV2``, compacted to its qubits with the noise model
cut down to them (``compaction.py``), all parameter bindings in one call. Results have the law
of local testing mode (``BackendSamplerV2``/``BackendEstimatorV2`` on the fake backend), which
the unit tests check statistically.

Around it: the fake backends and their noise models (``fake_backends.py``), noise models in
the forms each run takes and the simulators holding them (``noise_forms.py``), noisy Clifford
groups (``stabilizer_groups.py``) and wide groups on reused wires (``reused_wires.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache, partial

import numpy as np
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.primitives import PrimitiveResult, SamplerPubResult
from qiskit.primitives.containers import BitArray, DataBin
from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel
from qiskit_aer.primitives import SamplerV2 as AerSamplerV2

from qiskit_runtime_server.worker.engines.clifford import (
    snapped_circuits,
)
from qiskit_runtime_server.worker.engines.compaction import (
    compact_circuit,
    used_instructions,
)
from qiskit_runtime_server.worker.engines.estimation import estimate_pub, pauli_terms
from qiskit_runtime_server.worker.engines.factorized import sample_bits
from qiskit_runtime_server.worker.engines.fake_backends import backend_noise_model as backend_noise_model
from qiskit_runtime_server.worker.engines.fake_backends import default_memory_limit_mb as default_memory_limit_mb
from qiskit_runtime_server.worker.engines.fake_backends import fake_backend as fake_backend
from qiskit_runtime_server.worker.engines.light_cone import backward_cone, recorded_clbits, restrict
from qiskit_runtime_server.worker.engines.methods import (
    DENSITY_MATRIX_ADVANTAGE,
    KRAUS_MAX_QUBITS,
    SINGLE_THREAD_WORK,
    estimate_memory,
    max_statevector_qubits,
    mps_order,
    predict_noisy_seconds,
    predict_seconds,
    run_options,
    samples_at_end,
)
from qiskit_runtime_server.worker.engines.noise_forms import NoiseForms
from qiskit_runtime_server.worker.engines.noise_forms import kraus_forms as kraus_forms
from qiskit_runtime_server.worker.engines.partition import Component, noise_is_local
from qiskit_runtime_server.worker.engines.report import SimulationReport
from qiskit_runtime_server.worker.engines.reused_wires import ReusedWires
from qiskit_runtime_server.worker.engines.single_qubit import NoiseChannels
from qiskit_runtime_server.worker.engines.small_groups import ALWAYS_QUBITS as SMALL_GROUP_ALWAYS
from qiskit_runtime_server.worker.engines.small_groups import MAX_QUBITS as SMALL_GROUP_QUBITS
from qiskit_runtime_server.worker.engines.small_groups import SmallGroupProgram, compile_small_group
from qiskit_runtime_server.worker.engines.stabilizer_groups import StabilizerRun, group_bits, stabilizer_group
from qiskit_runtime_server.worker.engines.stim_sampler import NoiseTable, translate
from qiskit_runtime_server.worker.errors import ProgramError


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
        self.noise = NoiseForms(self.device, compact, self.memory_limit_mb)
        self.reused = ReusedWires(self.noise)
        self._custatevec = self.device == "GPU"
        # What the current job ran (methods, approximations, predicted time); see begin_job.
        self.report = SimulationReport()
        self.max_job_seconds: float | None = None
        # Processes a job's estimator pieces may run in (programs/piece_pool.py), and the most
        # OpenMP threads one Aer run may use (0: Aer's default); a piece helper sets its share.
        self.processes = 1
        self.threads = 0

    @property
    def cached_groups(self) -> int:
        """Groups on reused wires whose schedule and explicit errors this engine keeps."""
        return len(self.reused)

    def begin_job(self, max_seconds: float | None = None, processes: int = 1) -> SimulationReport:
        """Start a job's report; ``max_seconds`` fails the job before any run predicted to take it
        past that many seconds of simulation in all (``ProgramError`` naming the prediction);
        ``processes`` is how many processes the job's estimator pieces may share."""
        self.report = SimulationReport()
        self.max_job_seconds = max_seconds
        self.processes = max(1, processes)
        self.noise.forget_job()
        return self.report

    def num_qubits(self, backend_name: str) -> int:
        return int(fake_backend(backend_name).num_qubits)

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
                f"{len(keep)} qubits with method {reported}, about {seconds:.3g} s)."
            )

    def _small_group(
        self,
        backend_name: str,
        noise_model: NoiseModel | None,
        circuit: QuantumCircuit,
        group: Component,
        values: np.ndarray,
        columns: Mapping[Parameter, int],
        shots: int,
    ) -> SmallGroupProgram | None:
        """The group as a numpy density-matrix program (``small_groups.py``) when
        :func:`_prefer_small` says so; wider than ``ALWAYS_QUBITS``, only a noisy one."""
        width = len(group.qubits)
        if width > SMALL_GROUP_ALWAYS and (noise_model or backend_noise_model(backend_name)).is_ideal():
            return None
        channels = self.noise.noise_channels(backend_name, noise_model)
        small = compile_small_group(circuit, group.qubits, group.clbits, channels, values, columns)
        return small if small is not None and _prefer_small(small, small.instructions, shots) else None

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
            small = self._small_group(backend_name, noise_model, circuit, group, values, columns, shots)
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
        reuse = self.reused.group(backend_name, noise_model, sub, keep, used) if wide_noisy else None
        if reuse is not None:
            self.report.reused += 1
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
                if small is not None and _prefer_small(small, sub.size(), shots):
                    self._admit("small_group", sub, shots, bindings, keep, noisy=True, steps=small)
                    bits = small.sample(shots, np.random.default_rng(seed), len(clbits))
                    return bits[:, :, _positions(circuit, sub, group)]
            _parallel_bindings(sim, 4.0**sub.num_qubits, experiments)
            self._admit(method, sub, experiment_shots, experiments, keep, noisy=True)
            pubs = [_sampler_pub(sub, sub_values, shots, bindings)]
        elif wide:
            stabilizer = stabilizer_group(
                self.noise, self.report, backend_name, noise_model, sub, keep, used, sub_values, shots
            )
            if stabilizer is not None:
                sampled = self._sample_stabilizer(stabilizer, keep, seed)
                if sampled is not None:
                    return group_bits(circuit, stabilizer.circuits[0], sampled, bindings, shots, group)
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
            sim, compacted = self.noise.simulator(backend_name, noise_model, keep, used, form=form)
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
        if self.threads and (sim.options.max_parallel_threads or self.threads + 1) > self.threads:
            sim.set_options(max_parallel_threads=self.threads)  # a piece helper's share of the cores
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
            self.noise.noise_channels(backend_name, noise_model),
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


def _prefer_small(small: SmallGroupProgram, size: int, shots: int) -> bool:
    """Whether to run ``small`` in numpy rather than its group (``size`` instructions as Aer
    would get them) on Aer: always up to ``ALWAYS_QUBITS`` qubits, otherwise when it is
    predicted faster than Aer's faster noisy method."""
    if small.num_qubits <= SMALL_GROUP_ALWAYS:
        return True
    if any(block.superop.shape[0] > 1 for block in small.blocks):
        aer = predict_noisy_seconds(small.num_qubits, size, shots, small.bindings)
    else:  # Aer runs a group without parameters once, with every binding's shots
        aer = predict_noisy_seconds(small.num_qubits, size, shots * small.bindings, 1)
    return small.predicted_seconds(shots) <= aer


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
