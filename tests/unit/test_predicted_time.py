"""A job's predicted simulation time is reported, and a cap on it fails the job before it runs."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.primitives.containers.sampler_pub import SamplerPub

from qiskit_runtime_server.worker.engines.aer import AerEngine
from qiskit_runtime_server.worker.errors import ProgramError

BACKEND = "fake_lagos"


def entangled() -> QuantumCircuit:
    qc = QuantumCircuit(7)
    qc.sx(0)
    qc.rz(0.4, 0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.cx(1, 3)
    qc.cx(3, 5)
    qc.cx(5, 4)
    qc.measure_all()
    return qc


def test_tiny_cap_fails_the_job_naming_the_prediction_and_method() -> None:
    engine = AerEngine()
    engine.begin_job(max_seconds=1e-6)
    with pytest.raises(ProgramError, match=r"predicted.*method (density_matrix|automatic|statevector)") as info:
        engine.sample(BACKEND, [SamplerPub.coerce(entangled(), 2000)], shots=2000, seed=1, noise_model=None)
    assert "limit of 1e-06 s" in str(info.value)


def test_generous_cap_runs_and_reports_the_prediction() -> None:
    engine = AerEngine()
    report = engine.begin_job(max_seconds=3600)
    result = engine.sample(BACKEND, [SamplerPub.coerce(entangled(), 2000)], shots=2000, seed=1, noise_model=None)
    counts = result[0].data.meas.get_counts()
    assert sum(counts.values()) == 2000
    assert report is engine.report
    assert report.predicted_seconds > 0
    assert sum(report.methods.values()) >= 1
    metadata = report.metadata()
    assert metadata["predicted_seconds"] == pytest.approx(round(report.predicted_seconds, 4))
    assert metadata["predicted_seconds"] > 0
    assert metadata["widest_group"] >= 2
    # A new job starts a fresh report and lifts the cap.
    fresh = engine.begin_job()
    assert fresh.predicted_seconds == 0 and engine.max_job_seconds is None
    engine.sample(BACKEND, [SamplerPub.coerce(entangled(), 100)], shots=100, seed=2, noise_model=None)
    assert fresh.predicted_seconds > 0
    assert np.isfinite(fresh.predicted_seconds)
