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
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
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

from qiskit_runtime_server.worker.engines.compaction import (
    Instruction,
    compact_circuit,
    reduce_noise_model,
    used_instructions,
)
from qiskit_runtime_server.worker.engines.estimation import estimate_pub, pauli_terms
from qiskit_runtime_server.worker.engines.factorized import sample_bits
from qiskit_runtime_server.worker.engines.partition import Component, noise_is_local
from qiskit_runtime_server.worker.engines.single_qubit import NoiseChannels
from qiskit_runtime_server.worker.errors import ProgramError

# Distinct (backend, qubits, instructions) simulators kept per process.
SIMULATOR_CACHE_SIZE = 128
# Runs with less estimated work than this (amplitudes touched per instruction: 4**n for a
# density matrix, shots * 2**n for trajectories) use one OpenMP thread: threads only add
# start-up and spinning there (measured: a 2-qubit run is no faster with 2 threads, a 10-qubit
# 1000-shot trajectory run is 1.4x faster).
SINGLE_THREAD_WORK = 2**18
# A density-matrix run costs about 4**n per instruction, a trajectory run shots * 2**n, but one
# density-matrix amplitude costs less than one trajectory amplitude (no noise sampling, no
# per-shot restart): measured on fake_kolkata, 10 qubits/1000 shots took 2.3 s as a density
# matrix and 5.9 s as trajectories, 12 qubits/1000 shots 11.5 s and 8.1 s, i.e. a factor of
# about 2.6. Noisy runs use a density matrix when 4**n < DENSITY_MATRIX_ADVANTAGE * shots * 2**n
# (Aer's own rule is shots > 2**n, which picks trajectories for the 10-qubit case).
DENSITY_MATRIX_ADVANTAGE = 2.5
# Gate errors in Kraus form help density-matrix runs of few qubits (noisy Bell: 9 vs 14 ms) and
# stop paying at 10 qubits (2.29 vs 2.32 s); at 12 they cost more (13.0 vs 11.5 s).
KRAUS_MAX_QUBITS = 10
# On a GPU worker, statevector and density-matrix runs with at least this much work go to the
# GPU; smaller ones stay on the CPU, where they finish before a kernel launch pays off. Matrix
# product state and stabilizer runs always use the CPU (Aer has no GPU version of them).
GPU_MIN_WORK = 2**22
GPU_METHODS = frozenset({"automatic", "statevector", "density_matrix"})
# GPU runs at least this wide use cuStateVec (cuQuantum) when the installed qiskit-aer-gpu has it.
CUSTATEVEC_MIN_QUBITS = 20


@cache
def fake_backend(name: str) -> FakeBackendV2:
    """The client's fake backend class for ``fake_<folder>``, instantiated once.

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
            return value()
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
        self._channels: dict[str, NoiseChannels] = {}
        self._custatevec = self.device == "GPU"

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
        kraus: bool,
    ) -> NoiseModel | None:
        if not kraus:
            return reduce_noise_model(model, keep, used)
        # Convert every error this group needs in one Aer call, then look them up.
        cache = self._kraus_errors if backend_name is not None else {}
        source = backend_name or ""
        local = getattr(model, "_local_quantum_errors", {})
        missing = [
            (name, qubits, local[name][qubits])
            for name, qubits in used
            if qubits in local.get(name, {}) and (source, name, qubits) not in cache
        ]
        for (name, qubits, _), converted in zip(missing, kraus_forms([e for _, _, e in missing]), strict=True):
            cache[(source, name, qubits)] = converted

        def transform(name: str, qubits: tuple[int, ...], error: QuantumError) -> QuantumError:
            return cache.get((source, name, qubits)) or error

        return reduce_noise_model(model, keep, used, transform)

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
        kraus: bool = False,
    ) -> tuple[AerSimulator, bool]:
        """The simulator for a group on physical qubits ``keep`` applying ``used``, and whether it
        expects the group compacted to ``len(keep)`` qubits (``False``: the full circuit).
        ``kraus`` gives the gate errors in Kraus form.

        The backend's own noise model gives cached simulators; an explicit model (an option of
        this one job) gives a fresh one.
        """
        if noise_model is not None:
            reduced = self._reduce(noise_model, None, keep, used, kraus) if self.compact else None
            return (
                (self._new_simulator(noise_model), False) if reduced is None else (self._new_simulator(reduced), True)
            )
        key = (backend_name, tuple(keep), used, self.compact, kraus)
        cached = self._simulators.get(key)
        if cached is None:
            model = backend_noise_model(backend_name)
            reduced = self._reduce(model, backend_name, keep, used, kraus) if self.compact else None
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
        the same law); otherwise all bindings go to Aer as parameter binds.

        Raises:
            ProgramError: Aer cannot run the group (for example, it does not fit in memory).
        """
        keep = list(group.qubits)
        sub = compact_circuit(circuit, keep, others="drop")
        used = frozenset((name, tuple(keep[i] for i in qubits)) for name, qubits in used_instructions([sub]))
        bindings = values.shape[0]
        experiment_shots = shots if sub.num_parameters else shots * bindings
        limit = self.memory_limit_mb * 2**20
        model = noise_model if noise_model is not None else backend_noise_model(backend_name)
        width = len(keep)
        density = (
            not model.is_ideal()
            and 4.0**width < DENSITY_MATRIX_ADVANTAGE * experiment_shots * 2.0**width
            and 16 * 4.0**width <= limit
            and samples_at_end(sub)
            # Wide Clifford groups: Aer may take the (far cheaper) stabilizer route. Narrow ones
            # run fastest as a Kraus density matrix (noisy Bell: 2.3 ms instead of 8 ms).
            and (width <= KRAUS_MAX_QUBITS or not is_clifford(sub))
        )
        sim, compacted = self.simulator(
            backend_name, noise_model, keep, used, kraus=density and width <= KRAUS_MAX_QUBITS
        )
        if not compacted:
            sub = circuit
            density = False
        work = 4.0**sub.num_qubits if density else experiment_shots * 2.0**sub.num_qubits
        method = self._configure(sim, sub, work, density)
        needed = estimate_memory(sub, method)
        if needed > limit:
            raise ProgramError(
                f"The simulation of qubits {keep} ({len(keep)} interacting qubits) would need about "
                f"{needed / 2**30:.3g} GiB with method {method}, more than the {limit / 2**30:.3g} GiB one "
                "job may use (QRS_JOB_MEMORY_LIMIT)."
            )
        sampler = AerSamplerV2.from_backend(sim, seed=seed)
        if sub.num_parameters:
            parameters = tuple(sub.parameters)
            bound = BindingsArray({parameters: values[:, [columns[p] for p in parameters]]})
            pub = SamplerPub(sub, bound, shots, validate=False)
        else:
            pub = SamplerPub(sub, BindingsArray(), shots * bindings, validate=False)
        try:
            try:
                data = sampler.run([pub]).result()[0].data
            except Exception as exc:
                if not (sim.options.get("cuStateVec_enable") and "custatevec" in str(exc).lower()):
                    raise
                self._custatevec = False  # this qiskit-aer-gpu build has no cuQuantum
                sim.set_options(cuStateVec_enable=False)
                data = sampler.run([pub]).result()[0].data
        except Exception as exc:  # Aer reports memory and method failures as exceptions
            raise ProgramError(
                f"The simulation of qubits {keep} ({len(keep)} qubits, method {method}) failed: {_plain(str(exc))}"
            ) from None
        bits = np.zeros((bindings, shots, circuit.num_clbits), dtype=bool)
        for register in sub.cregs:
            indices = [circuit.find_bit(bit).index for bit in register]
            bits[:, :, indices] = data[register.name].to_bool_array(order="little").reshape(bindings, shots, -1)
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
        return sample_bits(
            circuit,
            values,
            shots,
            self.noise_channels(backend_name, noise_model),
            partial(self.run_group, backend_name, noise_model),
            rng,
            factorize=self.factorize and noise_is_local(model),
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
            bits = self.sample_bits(backend_name, circuit, pub.parameter_values, pub_shots, noise_model, rng)
            data = {}
            for register in circuit.cregs:
                indices = [circuit.find_bit(bit).index for bit in register]
                registered = bits[:, :, indices].reshape(*shape, pub_shots, len(indices))
                data[register.name] = BitArray.from_bool_array(registered, order="little")
            results.append(
                SamplerPubResult(
                    DataBin(**data, shape=shape),
                    metadata={"shots": pub_shots, "circuit_metadata": circuit.metadata},
                )
            )
        return PrimitiveResult(results, metadata={"version": 2})

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
_CLIFFORD_GATES = frozenset(
    {"id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg", "cx", "cy", "cz", "swap", "ecr", "iswap", "dcx"}
)
_NON_GATES = frozenset({"measure", "reset", "barrier", "delay"})


def is_clifford(circuit: QuantumCircuit) -> bool:
    """Whether every operation is a Clifford gate, a measurement, reset, barrier or delay."""
    for instruction in circuit.data:
        op = instruction.operation
        if op.name in _CLIFFORD_GATES or op.name in _NON_GATES:
            continue
        if op.name == "rz" and not op.is_parameterized() and _quarter_turn(float(op.params[0])):
            continue
        return False
    return True


def _quarter_turn(angle: float) -> bool:
    turns = angle / (math.pi / 2)
    return abs(turns - round(turns)) < 1e-9


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


@cache
def max_statevector_qubits(memory_limit_mb: int | None, device: str = "CPU") -> int:
    """The widest statevector (complex doubles, 16 bytes per amplitude) that fits the limit and
    what Aer reports for the device (host memory, or the GPU's memory)."""
    aer_limit = int(AerSimulator(device=device).configuration().n_qubits)
    if not memory_limit_mb:
        return aer_limit
    return max(1, min(aer_limit, int(math.log2(memory_limit_mb * 2**20 / 16))))


def choose_method(circuit: QuantumCircuit, *, noisy: bool, memory_limit_mb: int | None, device: str = "CPU") -> str:
    """Aer's own choice while a statevector fits in memory; beyond that, a method that scales.

    Aer's automatic choice is the one bare Aer makes for the same circuit (density matrix for
    noisy runs with more shots than amplitudes, statevector otherwise, stabilizer for Clifford
    circuits and noise). Wider than a statevector can hold: ideal Clifford circuits go to the
    stabilizer method (polynomial in qubits), anything else to matrix product states, which
    handle noise and low-entanglement circuits of hundreds of qubits.
    """
    if circuit.num_qubits <= max_statevector_qubits(memory_limit_mb, device):
        return "automatic"
    if not noisy and is_clifford(circuit):
        return "stabilizer"
    return "matrix_product_state"


def estimate_memory(circuit: QuantumCircuit, method: str) -> float:
    """Bytes a run of ``circuit`` needs with ``method``, before running it.

    Statevector: 16 bytes per amplitude (Aer's automatic choice takes a density matrix only when
    it fits its memory limit, so a statevector is what it needs at least). Matrix product state:
    an upper bound from the Schmidt rank across each cut of the qubit line, which is at most
    ``2**min(left, right)`` and grows at most 4-fold per two-qubit gate straddling the cut.
    Stabilizer: negligible.
    """
    n = circuit.num_qubits
    if method == "stabilizer":
        return float(n * n)
    if method != "matrix_product_state":
        return float(16.0 * 2.0**n)
    straddling = np.zeros(max(n - 1, 0))
    for instruction in circuit.data:
        if len(instruction.qubits) == 2 and instruction.operation.name != "barrier":
            a, b = sorted(circuit.find_bit(q).index for q in instruction.qubits)
            straddling[a:b] += 1
    cuts = np.arange(1, n)
    log_rank = np.minimum(2.0 * straddling, np.minimum(cuts, n - cuts))
    bond = np.concatenate([[0.0], log_rank, [0.0]])
    return float(np.sum(32.0 * 2.0 ** (bond[:-1] + bond[1:])))


def default_memory_limit_mb() -> int:
    """Half of this machine's physical memory, in MiB: the default share of one job."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return max(256, total // 2 // 2**20)


def samples_at_end(circuit: QuantumCircuit) -> bool:
    """Whether Aer can sample all shots from one final state: measurements only at the end of
    their qubits, no reset, no control flow (Aer's condition for a density-matrix run)."""
    measured: set[object] = set()
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name == "barrier":
            continue
        if operation.name == "reset" or getattr(operation, "blocks", ()):
            return False
        if operation.name == "measure":
            measured.update(instruction.qubits)
        elif measured.intersection(instruction.qubits):
            return False
    return True


def run_options(
    circuit: QuantumCircuit,
    *,
    noisy: bool,
    work: float,
    device: str,
    memory_limit_mb: int | None,
    custatevec: bool,
    density: bool = False,
) -> dict[str, object]:
    """Aer options for one run: method, device, threads (and cuStateVec on a GPU).

    ``work`` is the estimated amplitudes touched per instruction (``4**n`` for a density
    matrix, ``shots * 2**n`` for trajectories). Small runs use one OpenMP thread (see
    ``SINGLE_THREAD_WORK``), leaving the other cores to other workers; larger ones use all of
    them, as bare Aer does. On a GPU worker only statevector/density-matrix runs of at least
    ``GPU_MIN_WORK`` go to the GPU. ``density`` asks for a density matrix (see
    ``DENSITY_MATRIX_ADVANTAGE``); otherwise Aer's automatic choice or a method that scales.
    """
    if density:
        method = "density_matrix"
    else:
        method = choose_method(circuit, noisy=noisy, memory_limit_mb=memory_limit_mb, device=device)
    gpu = device == "GPU" and method in GPU_METHODS and work >= GPU_MIN_WORK
    options: dict[str, object] = {
        "method": method,
        "device": "GPU" if gpu else "CPU",
        "max_parallel_threads": 1 if work < SINGLE_THREAD_WORK else 0,
    }
    if device == "GPU":
        options["cuStateVec_enable"] = gpu and custatevec and circuit.num_qubits >= CUSTATEVEC_MIN_QUBITS
    return options


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
