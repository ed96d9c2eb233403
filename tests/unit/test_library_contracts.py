"""The parts of arq, uvicorn, qiskit-aer and qiskit-ibm-runtime internals this project builds on.

pyproject.toml bounds each of these libraries to the releases tested; this module is what fails,
saying what moved, when an upgrade inside (or past) those bounds changes one of them:

* arq: the ``Worker`` methods ``worker/arq_overrides.py`` overrides (signatures, and the source of
  those it copies or whose inner order it relies on), the attributes they use, and the Redis
  key prefixes several modules write to directly.
* uvicorn: the ``HttpToolsProtocol`` methods and attributes ``api/server.py`` overrides or uses.
* qiskit-aer: the private tables of ``NoiseModel`` and fields of ``RelaxationNoisePass`` read in
  ``worker/engines`` and ``worker/programs``.
* qiskit-ibm-runtime: the non-public modules the worker imports, and the ``FakeBackendV2``
  fields ``worker/fractional.py`` sets.
* samplomatic (the client's twirling library): ``Samplex.sample``'s ``max_workers``, which
  ``worker/programs/executor.py`` sets to one thread, the pool it makes run inline, and the
  counter that names change-basis boxes, which ``worker/programs/build_cache.py`` resets per job.
* qiskit-mitigation: the modules whose ``build`` name ``worker/programs/build_cache.py`` replaces,
  and the task classes whose ``_box_circuit`` it caches.

A failure here is not a bug to patch around: re-read the override against the new release,
adapt it, then update the expectation here (and the bound in pyproject.toml).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

import pytest

# arq ----------------------------------------------------------------------------------------

# Overridden arq Worker methods and the parameter names arq calls them with.
ARQ_SIGNATURES = {
    "main": ["self"],
    "close": ["self"],
    "start_jobs": ["self", "job_ids"],
    "_poll_iteration": ["self"],
    "_release_sem_dec_counter_on_complete": ["self"],
    # QrsWorker.finish_job takes (job_id, finish, *args, **kwargs) and passes the rest on.
    "finish_job": [
        "self",
        "job_id",
        "finish",
        "result_data",
        "result_timeout_s",
        "keep_result_forever",
        "incr_score",
        "keep_in_progress",
    ],
    "handle_sig": ["self", "signum"],
}

# sha256 of arq 0.28.0's source of the methods whose body our overrides copy (main, close) or
# whose inner order they rely on: start_jobs counts a job as started before its WATCH (our
# start_jobs gives the slot back on a lost connection); run_job calls finish_job positionally
# and shielded; _release_sem_dec_counter_on_complete is the job task's done-callback.
ARQ_SOURCES = {
    "main": "45ca1591c9717466eec76e17fa958f84acf6085103d692a84ee25d9904e7f8fc",
    "close": "5bcc9cb35668082910200a680f052cc5d36a8ce3b3c04a95ef32c14ebd7daaa1",
    "start_jobs": "b45797cfa40bed7fe6e9b8b8100c5f5b4144fe85112155c4e355df6ed8521f5f",
    "run_job": "589a19059ff84ee777552dc9fa5ff76b17d6d0d7f99716d2720a2ed07ccb9607",
    "_poll_iteration": "f8d39d823a0a59f27a45f1c0e80bee44e16219d5072235fbc81866402298322f",
    "_release_sem_dec_counter_on_complete": "0ed101482e942c33a64ccbe19eb3c4d29da9497258b1ffb1380da300da9bc481",
}

# Attributes of a Worker the overrides and worker/app.py read or set.
ARQ_ATTRIBUTES = [
    "_pool",
    "_handle_signals",
    "tasks",
    "job_counter",
    "max_jobs",
    "sem",
    "ctx",
    "on_startup",
    "on_shutdown",
    "poll_delay_s",
    "health_check_key",
    "in_progress_timeout_s",
    "queue_name",
]

# arq's Redis keys, written directly by shared/queue.py, shared/routing.py, worker/leases.py,
# worker/recovery.py and worker/tasks.py; a change would also strand the keys of a running deployment.
ARQ_CONSTANTS = {
    "job_key_prefix": "arq:job:",
    "in_progress_key_prefix": "arq:in-progress:",
    "result_key_prefix": "arq:result:",
    "retry_key_prefix": "arq:retry:",
    "abort_jobs_ss": "arq:abort",
    "health_check_key_suffix": ":health-check",
}


def _digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("name", sorted(ARQ_SIGNATURES))
def test_arq_worker_methods_we_override_keep_their_signature(name: str) -> None:
    from arq import Worker

    assert _parameters(getattr(Worker, name)) == ARQ_SIGNATURES[name], (
        f"arq's Worker.{name} changed its signature: review worker/arq_overrides.py"
    )


@pytest.mark.parametrize("name", sorted(ARQ_SOURCES))
def test_arq_worker_methods_we_copy_or_rely_on_are_unchanged(name: str) -> None:
    from arq import Worker

    assert _digest(getattr(Worker, name)) == ARQ_SOURCES[name], (
        f"arq's Worker.{name} is not arq 0.28.0's any more: compare it with worker/arq_overrides.py"
    )


def test_our_overrides_accept_what_arq_passes() -> None:
    from qiskit_runtime_server.worker.arq_overrides import QrsWorker

    overridden = {name for name, value in vars(QrsWorker).items() if inspect.isfunction(value)}
    assert overridden <= set(ARQ_SIGNATURES), f"an override not checked here: {overridden - set(ARQ_SIGNATURES)}"
    for name in overridden:
        ours = inspect.signature(getattr(QrsWorker, name)).parameters
        named = [p for p in ours.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert [p.name for p in named] == ARQ_SIGNATURES[name][: len(named)], name
        if len(named) < len(ARQ_SIGNATURES[name]):
            assert any(p.kind == p.VAR_POSITIONAL for p in ours.values()), name


async def test_arq_worker_has_the_attributes_we_use() -> None:
    import fakeredis
    from arq.connections import ArqRedis
    from arq.worker import func

    from qiskit_runtime_server.worker.arq_overrides import QrsWorker

    async def job(ctx: dict[str, Any]) -> None:
        return None

    pool = ArqRedis(connection_pool=fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()).connection_pool)
    worker = QrsWorker(functions=[func(job, name="job")], redis_pool=pool, handle_signals=False)
    missing = [name for name in ARQ_ATTRIBUTES if not hasattr(worker, name)]
    assert not missing, f"arq's Worker lost {missing}: review worker/arq_overrides.py and worker/app.py"
    assert worker._pool is pool
    await pool.aclose()


def test_arq_redis_keys() -> None:
    from arq import constants

    for name, value in ARQ_CONSTANTS.items():
        assert getattr(constants, name, None) == value, f"arq.constants.{name} changed: our keys would not match arq's"


# uvicorn ------------------------------------------------------------------------------------

UVICORN_SIGNATURES = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_url": ["self", "url"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_response_complete": ["self"],
    "on_message_complete": ["self"],
    "send_400_response": ["self", "msg"],
    "timeout_keep_alive_handler": ["self"],
}

# Attributes of a fresh protocol object api/server.py reads or sets.
UVICORN_ATTRIBUTES = [
    "app",
    "loop",
    "transport",
    "cycle",
    "connections",
    "tasks",
    "server_state",
    "timeout_keep_alive",
    "timeout_keep_alive_task",
]


@pytest.mark.parametrize("name", sorted(UVICORN_SIGNATURES))
def test_uvicorn_protocol_methods_we_override_keep_their_signature(name: str) -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert _parameters(getattr(HttpToolsProtocol, name)) == UVICORN_SIGNATURES[name], (
        f"uvicorn's HttpToolsProtocol.{name} changed its signature: review api/server.py"
    )


def test_our_protocol_overrides_only_checked_methods() -> None:
    from qiskit_runtime_server.api.server import LimitedHttpProtocol

    public = {n for n, v in vars(LimitedHttpProtocol).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert public | {"__init__"} <= set(UVICORN_SIGNATURES), public - set(UVICORN_SIGNATURES)


async def test_uvicorn_protocol_behaviour_we_build_on() -> None:
    import asyncio

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    state = ServerState()
    protocol = HttpToolsProtocol(uvicorn.Config(app), state, {}, _loop=asyncio.get_running_loop())
    missing = [name for name in UVICORN_ATTRIBUTES if not hasattr(protocol, name)]
    assert not missing, f"uvicorn's HttpToolsProtocol lost {missing}: review api/server.py"
    assert isinstance(state.default_headers, list)
    # A parser callback that raises (our header limit) is answered by send_400_response.
    received = inspect.getsource(HttpToolsProtocol.data_received)
    assert "except httptools.HttpParserError" in received and "self.send_400_response(" in received
    # on_headers_complete starts self.app, read when it is called (our 503 swaps it for one call).
    assert "app = self.app" in inspect.getsource(HttpToolsProtocol.on_headers_complete)
    # on_response_complete is where the keep-alive timer is armed (we arm it on connect too).
    assert "self.timeout_keep_alive_task = " in inspect.getsource(HttpToolsProtocol.on_response_complete)
    assert "self.more_body" in inspect.getsource(RequestResponseCycle.__init__)


# qiskit-aer ---------------------------------------------------------------------------------


def test_noise_model_private_tables() -> None:
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    model = NoiseModel(basis_gates=["sx", "cx"])
    two, one = depolarizing_error(0.01, 2), depolarizing_error(0.01, 1)
    readout = ReadoutError([[0.9, 0.1], [0.2, 0.8]])
    model.add_quantum_error(two, "cx", [0, 1])
    model.add_all_qubit_quantum_error(one, "sx")
    model.add_readout_error(readout, [1])
    assert model._default_readout_error is None
    model.add_all_qubit_readout_error(readout)
    # name -> qubits -> error, name -> error, qubits -> error, one error, a list of passes.
    assert model._local_quantum_errors == {"cx": {(0, 1): two}}
    assert model._default_quantum_errors == {"sx": one}
    assert model._local_readout_errors == {(1,): readout}
    assert model._default_readout_error == readout
    assert model._custom_noise_passes == []


def test_relaxation_noise_pass_private_fields() -> None:
    from qiskit.circuit import Delay
    from qiskit_aer.noise import NoiseModel
    from qiskit_aer.noise.passes import RelaxationNoisePass
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    relaxation = RelaxationNoisePass(
        t1s=[1e-4, 2e-4], t2s=[1e-4, 1.5e-4], dt=1e-9, op_types=[Delay], excited_state_populations=[0.0, 0.1]
    )
    assert list(relaxation._t1s) == [1e-4, 2e-4] and list(relaxation._t2s) == [1e-4, 1.5e-4]
    assert list(relaxation._p1s) == [0.0, 0.1] and relaxation._dt == 1e-9
    assert relaxation._ops == (Delay,) and relaxation._method == "append"
    error = relaxation._func(Delay(1000, "dt"), [1])
    assert error is not None and error.num_qubits == 1
    # A backend's model (what the workers build) keeps its delay relaxation in this list.
    model = NoiseModel.from_backend(FakeManilaV2())
    assert any(isinstance(p, RelaxationNoisePass) for p in model._custom_noise_passes)


# qiskit-ibm-runtime -------------------------------------------------------------------------

# Names the worker imports from the client package's non-public modules.
CLIENT_IMPORTS = [
    ("qiskit_ibm_runtime.executor.calculate_twirling_shots", "calculate_twirling_shots"),
    ("qiskit_ibm_runtime.executor_estimator.finalize_options", "finalize_estimator_options"),
    ("qiskit_ibm_runtime.executor_estimator.pec", "calculate_pec_twirling_shots"),
    ("qiskit_ibm_runtime.executor_estimator.prepare", "choose_task_class"),
    ("qiskit_ibm_runtime.executor_estimator.prepare", "normalise_extrapolator"),
    ("qiskit_ibm_runtime.executor_estimator.prepare", "prepare"),
    ("qiskit_ibm_runtime.executor_estimator.utils", "estimator_options_to_boxing_options"),
    ("qiskit_ibm_runtime.executor_estimator.utils", "resolve_noise_factors"),
    ("qiskit_ibm_runtime.fake_provider.executor.broadcast_sample", "broadcast_sample"),
    ("qiskit_ibm_runtime.fake_provider.fake_backend", "FakeBackendV2"),
    ("qiskit_ibm_runtime.noise_learner_v3", "converters"),
    ("qiskit_ibm_runtime.noise_learner_v3.find_learning_protocol", "find_learning_protocol"),
    ("qiskit_ibm_runtime.noise_learner_v3.learning_protocol", "LearningProtocol"),
    ("qiskit_ibm_runtime.noise_learner_v3.params_converters", "NOISE_LEARNER_V3_PARAMS_CONVERTERS"),
    ("qiskit_ibm_runtime.quantum_program.params_converters", "QUANTUM_PROGRAM_PARAMS_CONVERTERS"),
]


@pytest.mark.parametrize(("module", "name"), CLIENT_IMPORTS, ids=[f"{m}.{n}" for m, n in CLIENT_IMPORTS])
def test_client_internals_the_worker_imports(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone from qiskit-ibm-runtime"


def test_fake_backend_builds_its_target_from_its_dicts() -> None:
    """worker/fractional.py replaces ``_conf_dict``/``_props_dict`` before the ``Target`` is built."""
    from qiskit_ibm_runtime.fake_provider import FakeTorino

    backend = FakeTorino()
    assert isinstance(backend._conf_dict, dict) and backend._props_dict is None and backend._target is None
    backend._set_props_dict_from_json()
    assert isinstance(backend._props_dict, dict)
    backend._conf_dict = {**backend._conf_dict, "basis_gates": [*backend._conf_dict["basis_gates"], "rzz"]}
    backend._props_dict = {
        **backend._props_dict,
        "gates": [g for g in backend._props_dict["gates"] if g["gate"] != "rx"],
    }
    # rzz (only in the replaced configuration) is built from the replaced properties.
    assert (0, 1) in backend.target["rzz"] and "rx" not in backend.target


def test_samplex_sample_gives_the_same_output_on_one_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """worker/programs/executor.py's ``SerialSamplex`` passes ``max_workers=1`` to
    ``Samplex.sample`` and replaces the module's ``ThreadPoolExecutor`` with one that runs each
    node when submitted; samplomatic must accept both and draw the same values as with its
    default pool for the same generator (it spawns one child generator per node)."""
    import numpy as np
    from qiskit.circuit import Parameter, QuantumCircuit
    from samplomatic import Twirl, build

    from qiskit_runtime_server.worker.programs.executor import SerialSamplex

    circuit = QuantumCircuit(3)
    with circuit.box([Twirl()]):
        circuit.rx(Parameter("a"), 0)
        circuit.cz(0, 1)
        circuit.cz(1, 2)
    with circuit.box([Twirl()]):
        circuit.measure_all()
    _, samplex = build(circuit)
    import concurrent.futures

    import samplomatic.samplex.samplex as samplex_module

    with monkeypatch.context() as patch:  # samplomatic's own pool, even if an earlier test swapped it
        patch.setattr(samplex_module, "ThreadPoolExecutor", concurrent.futures.ThreadPoolExecutor)
        pooled = samplex.sample({"parameter_values": [0.3]}, num_randomizations=50, rng=np.random.default_rng(7))
    serial = SerialSamplex(samplex).sample(
        {"parameter_values": [0.3]}, num_randomizations=50, rng=np.random.default_rng(7)
    )
    assert set(pooled) == set(serial)
    for key in pooled:
        assert np.array_equal(np.asarray(pooled[key]), np.asarray(serial[key])), key
    assert np.asarray(pooled["parameter_values"]).std(axis=0).max() > 0  # twirled: the draws vary
    # SerialSamplex made samplomatic's pool the inline one, by the name its sample() uses.
    from qiskit_runtime_server.worker.programs.executor import InlinePool

    assert samplex_module.ThreadPoolExecutor is InlinePool
    assert "with ThreadPoolExecutor(max_workers) as pool:" in inspect.getsource(type(samplex).sample)


def test_mitigation_tasks_call_samplomatic_build_by_their_module_name() -> None:
    """worker/programs/build_cache.py replaces the name ``build`` in the qiskit_mitigation modules
    that build samplexes: each must have imported it from samplomatic (or hold the cached one)
    and call it by that name, once per boxed circuit."""
    import samplomatic

    from qiskit_runtime_server.worker.programs import build_cache

    for name in build_cache.TASK_MODULES:
        module = importlib.import_module(name)
        assert getattr(module, "build", None) in (samplomatic.build, build_cache.cached_build), name
        assert "build(" in inspect.getsource(module), name


def test_the_tasks_box_circuits_through_a_classmethod_of_circuit_and_options() -> None:
    """worker/programs/build_cache.py caches ``_box_circuit`` of ``MitigationTask`` and ``TREX``:
    each must be a classmethod taking ``(circuit, boxing_options)``, called by that name when a
    task prepares its circuit (PEC's override calls the base one)."""
    from qiskit_runtime_server.worker.programs import build_cache

    for name, class_name in build_cache.BOXING_CLASSES:
        module = importlib.import_module(name)
        task = getattr(module, class_name)
        method = task.__dict__["_box_circuit"]
        assert isinstance(method, classmethod), (name, class_name)
        function = getattr(method.__func__, "__wrapped__", method.__func__)
        assert list(inspect.signature(function).parameters) == ["cls", "circuit", "boxing_options"], name
        assert "._box_circuit(" in inspect.getsource(module), name


def test_change_basis_boxes_are_named_from_one_class_counter() -> None:
    """worker/programs/build_cache.py's ``start_program`` resets ``GroupMeasIntoBoxes._REF_COUNTER``:
    it must still be the class attribute the pass names ``ChangeBasis`` refs from
    (``basis{n}``), so that a reset makes the next job's boxed circuits repeat the names."""
    import itertools

    from qiskit.circuit import QuantumCircuit
    from samplomatic import ChangeBasis
    from samplomatic.transpiler import generate_boxing_pass_manager
    from samplomatic.transpiler.passes.group_meas_into_boxes import GroupMeasIntoBoxes

    from qiskit_runtime_server.worker.programs import build_cache

    assert isinstance(GroupMeasIntoBoxes._REF_COUNTER, itertools.count)

    def refs() -> list[str]:
        circuit = QuantumCircuit(2)
        circuit.h(0)
        circuit.cx(0, 1)
        circuit.measure_all()
        boxed = generate_boxing_pass_manager(measure_annotations="change_basis").run(circuit)
        return [
            a.ref for inst in boxed.data if inst.operation.name == "box"
            for a in inst.operation.annotations if isinstance(a, ChangeBasis)
        ]  # fmt: skip

    build_cache.start_program()
    first = refs()
    assert first == ["basis0"], first
    assert refs() == ["basis1"]  # the counter runs on...
    build_cache.start_program()
    assert refs() == first  # ...until the next job starts
