"""The unmodified client runs SamplerV2 and EstimatorV2 jobs, embedded and split."""

from __future__ import annotations

import json
import warnings

import httpx
import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


@pytest.mark.parametrize("backend_name", ["fake_manila", "fake_sherbrooke"])
def test_noisy_bell_counts(service, backend_name: str) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend(backend_name)
    assert backend.name == backend_name
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(bell())
    job = SamplerV2(mode=backend).run([isa], shots=4096)
    result = job.result()
    counts = result[0].data.meas.get_counts()
    assert sum(counts.values()) == 4096
    assert counts.get("00", 0) + counts.get("11", 0) > 0.85 * 4096
    assert min(counts.get("00", 0), counts.get("11", 0)) > 0.4 * 4096
    # The backend's noise model is on by default: some 01/10 outcomes appear.
    assert counts.get("01", 0) + counts.get("10", 0) > 0
    again = service.job(job.job_id())
    assert again.status() == "DONE"
    assert again.result()[0].data.meas.get_counts() == counts


def test_default_shots_and_seed(service) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_manila")
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(bell())
    sampler = SamplerV2(mode=backend, options={"default_shots": 300, "simulator": {"seed_simulator": 7}})
    first = sampler.run([isa]).result()[0].data.meas
    second = sampler.run([isa]).result()[0].data.meas
    assert first.num_shots == 300
    assert first.get_counts() == second.get_counts()


def test_estimator_bell_zz(service) -> None:
    from qiskit_ibm_runtime import EstimatorV2

    backend = service.backend("fake_manila")
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    obs = SparsePauliOp("ZZ").apply_layout(isa.layout)
    # Level 0: IBM's default level 1 (TREX) would take the readout part of the noise away.
    options = {"default_precision": 0.01, "resilience_level": 0}
    result = EstimatorV2(mode=backend, options=options).run([(isa, obs)]).result()
    assert result[0].data.evs == pytest.approx(1.0, abs=0.2)
    assert result[0].data.evs < 1.0  # noisy
    assert result[0].metadata["target_precision"] == pytest.approx(0.01)


def test_parameter_sweep(service) -> None:
    from qiskit_ibm_runtime import EstimatorV2, SamplerV2

    backend = service.backend("fake_manila")
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.ry(theta, 0)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    obs = SparsePauliOp("Z").apply_layout(isa.layout)
    values = np.linspace(0, np.pi, 5).reshape(5, 1)
    evs = EstimatorV2(mode=backend).run([(isa, obs, values)]).result()[0].data.evs
    assert evs.shape == (5,)
    np.testing.assert_allclose(evs, np.cos(values.ravel()), atol=0.15)

    measured = qc.copy()
    measured.measure_all()
    isa_m = generate_preset_pass_manager(backend=backend, optimization_level=1).run(measured)
    bits = SamplerV2(mode=backend).run([(isa_m, values, 2000)]).result()[0].data.meas
    assert bits.shape == (5,)
    ones = [bits[i].get_counts().get("1", 0) / 2000 for i in range(5)]
    np.testing.assert_allclose(ones, np.sin(values.ravel() / 2) ** 2, atol=0.1)


def submit_raw(deployment, program_id: str, backend: str, params: dict) -> str:
    """POST /jobs with params encoded by the client's own RuntimeEncoder; returns the job id."""
    from qiskit_ibm_runtime import RuntimeEncoder

    token = httpx.post(f"{deployment.base}/identity/token", data={"apikey": "test-api-key"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/json"}
    body = json.dumps({"program_id": program_id, "backend": backend, "params": params}, cls=RuntimeEncoder)
    response = httpx.post(f"{deployment.base}/api/v1/jobs", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_circuit_wider_than_backend_fails_readably(deployment, service) -> None:
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

    wide = QuantumCircuit(7)
    wide.x(6)
    wide.measure_all()
    params = {"pubs": [(wide, np.array([]), None)], "options": {}, "version": 2, "support_qiskit": True}
    job = service.job(submit_raw(deployment, "sampler", "fake_manila", params))
    with pytest.raises(RuntimeJobFailureError, match="more than the 5 qubits"):
        job.result()
    assert job.status() == "ERROR"
    # The worker keeps serving.
    small = service.backend("fake_manila")
    ok = generate_preset_pass_manager(backend=small, optimization_level=1).run(bell())
    assert SamplerV2(mode=small).run([ok], shots=100).result()[0].data.meas.num_shots == 100


def test_explicit_noise_model_and_ignored_options(service) -> None:
    from qiskit_aer.noise import NoiseModel
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_sherbrooke")
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(bell())
    sampler = SamplerV2(mode=backend)
    sampler.options.simulator.noise_model = NoiseModel()  # ideal
    sampler.options.dynamical_decoupling.enable = True
    sampler.options.twirling.enable_gates = True
    job = sampler.run([isa], shots=2000)
    result = job.result()
    assert set(result[0].data.meas.get_counts()) <= {"00", "11"}
    ignored = result.metadata["ignored_options"]
    assert ignored["dynamical_decoupling"] == {"enable": True}
    assert ignored["twirling"]["enable_gates"] is True
    logs = job.logs()
    assert "ignored" in logs and "dynamical_decoupling" in logs and "completed" in logs


def test_estimator_default_shots_set_precision(service) -> None:
    from qiskit_ibm_runtime import EstimatorV2

    backend = service.backend("fake_manila")
    qc = QuantumCircuit(1)
    qc.x(0)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(qc)
    obs = SparsePauliOp("Z").apply_layout(isa.layout)
    estimator = EstimatorV2(mode=backend, options={"default_shots": 400, "resilience_level": 1})
    job = estimator.run([(isa, obs)])
    result = job.result()
    assert result[0].metadata["target_precision"] == pytest.approx(0.05)
    # Level 1 twirls the measurements: IBM's "auto" split of 400 shots is 7 randomizations x 64.
    assert result[0].metadata["shots"] == 448
    assert result[0].metadata["num_randomizations"] == 7
    assert result[0].data.evs == pytest.approx(-1.0, abs=0.25)
    assert result.metadata["resilience_level"] == 1  # honoured, no longer listed as ignored
    assert "ignored_options" not in result.metadata


def test_estimator_observable_on_every_qubit_of_127(service) -> None:
    """EstimatorV2 with X on all 127 qubits and mitigation options on used to kill the worker."""
    from qiskit_ibm_runtime import EstimatorV2

    backend = service.backend("fake_sherbrooke")
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=3).run(qc)
    estimator = EstimatorV2(mode=backend)
    estimator.options.resilience_level = 1
    estimator.options.resilience.zne_mitigation = True
    estimator.options.twirling.enable_gates = True
    every_x = SparsePauliOp("X" * 127)
    ghz_xxx = SparsePauliOp("XXX").apply_layout(isa.layout)
    result = estimator.run([(isa, [every_x, ghz_xxx])], precision=0.03).result(timeout=120)
    evs, stds = result[0].data.evs, result[0].data.stds
    assert evs.shape == (2,)
    # The 124 idle qubits read X = +-1 at random, so <X...X> is 0; TREX divides it by the product
    # of 127 readout fidelities, which multiplies its noise as much (as on IBM): a finite value
    # with a huge standard deviation.
    assert np.isfinite(evs[0]) and stds[0] > 10 * stds[1]
    assert 0.8 < evs[1] < 1.2  # <XXX> of a GHZ state is 1; TREX and ZNE remove most of the noise
    assert result.metadata["resilience"]["zne_mitigation"] is True  # honoured now, not ignored
    assert "ignored_options" not in result.metadata


def test_a_job_past_the_shot_bound_is_refused_with_its_reason(service) -> None:
    """3 PUBs x 10^7 shots (3.9 GB of simulation before): POST /jobs answers 400, the client says why."""
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.exceptions import IBMRuntimeError

    backend = service.backend("fake_manila")
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1).run(bell())
    with pytest.raises(IBMRuntimeError, match="QRS_MAX_JOB_SHOTS"):
        SamplerV2(mode=backend).run([isa] * 3, shots=10_000_000)
