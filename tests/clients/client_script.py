"""One end-to-end session of an unmodified qiskit-ibm-runtime client, run by each version's own venv.

Standalone (it imports only the client, qiskit and the standard library), started as
``<venv>/bin/python client_script.py`` by ``tests/clients/test_client_matrix.py``. The connection
comes from the environment only: ``QiskitRuntimeService()`` gets no argument, so the client reads
``QISKIT_IBM_TOKEN``, ``QISKIT_IBM_URL``, ``QISKIT_IBM_INSTANCE`` and ``QISKIT_IBM_CHANNEL`` (every
release from 0.40 to 0.51 reads these four in ``AccountManager._from_env_variables``) plus whatever
else the recipe sets (``IAM_URL``, ``GLOBAL_SEARCH_URL``, ``HTTPS_PROXY``, ``REQUESTS_CA_BUNDLE`` ...).

Steps: connect, backends, sampler (SamplerV2 Bell), estimator (EstimatorV2 <ZZ>), job
(``service.job(id)``), jobs (``service.jobs()``), session (SamplerV2 in ``Session(backend=...)``)
and executor_sampler (the client-side Sampler on the ``executor`` program, 0.47+; reported as
skipped where the release has none). Each step prints one JSON line
``{"name", "ok", "seconds", ...}``; the last line is a summary. Exit status 1 if any step failed.

``QRS_CLIENT_BACKEND`` names the backend (default ``fake_manila``), ``QRS_CLIENT_SHOTS`` the shots.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

BACKEND = os.environ.get("QRS_CLIENT_BACKEND", "fake_manila")
SHOTS = int(os.environ.get("QRS_CLIENT_SHOTS", "2000"))
RESULT_TIMEOUT = float(os.environ.get("QRS_CLIENT_RESULT_TIMEOUT", "60"))
# Noise of the fake backends is on: a Bell state keeps well over this share of 00 + 11, <ZZ> above this.
BELL_MIN_CORRELATED = 0.85
ZZ_MIN = 0.8

warnings.filterwarnings("ignore", category=DeprecationWarning)


def emit(line: dict[str, Any]) -> None:
    """Print one JSON line and flush (the test reads stdout line by line)."""
    print(json.dumps(line, default=str), flush=True)


def bell(measure: bool) -> Any:
    """The two-qubit Bell circuit, measured (``measure_all``) or not."""
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    if measure:
        circuit.measure_all()
    return circuit


def isa(circuit: Any, backend: Any) -> Any:
    """``circuit`` transpiled for ``backend`` with the preset pass manager."""
    from qiskit.transpiler import generate_preset_pass_manager

    return generate_preset_pass_manager(backend=backend, optimization_level=1).run(circuit)


def check_bell(counts: dict[str, int], shots: int) -> dict[str, Any]:
    """Assert the counts are a noisy Bell state; return them with the correlated share."""
    total = sum(counts.values())
    assert total == shots, f"{total} shots counted, {shots} asked"
    correlated = (counts.get("00", 0) + counts.get("11", 0)) / total
    assert correlated >= BELL_MIN_CORRELATED, f"00+11 share {correlated:.3f} < {BELL_MIN_CORRELATED}: {counts}"
    assert counts.get("00", 0) > 0.3 * total and counts.get("11", 0) > 0.3 * total, f"not balanced: {counts}"
    return {"counts": counts, "correlated": round(correlated, 4)}


def counts_of(pub_result: Any) -> dict[str, int]:
    """Counts of a sampler pub result: the ``meas`` register, else all registers joined."""
    data = pub_result.data
    if hasattr(data, "meas"):
        counts: dict[str, int] = data.meas.get_counts()
        return counts
    joined: dict[str, int] = pub_result.join_data().get_counts()
    return joined


class Run:
    """The state the steps share (service, backend, job ids) and the step runner."""

    def __init__(self) -> None:
        self.service: Any = None
        self.backend: Any = None
        self.job_ids: list[str] = []
        self.sampler_counts: dict[str, int] = {}
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def step(self, name: str, body: Callable[[], dict[str, Any] | None]) -> bool:
        """Run one step, print its line, and return whether it passed (a skip counts as passed)."""
        started = time.monotonic()
        line: dict[str, Any] = {"name": name}
        try:
            extra = body() or {}
            line.update({"ok": True, **extra})
            if extra.get("skipped"):
                self.skipped.append(name)
        except Exception as error:
            line.update({"ok": False, "error": f"{type(error).__name__}: {error}"[:2000]})
            line["traceback"] = traceback.format_exc()[-3000:]
            self.failed.append(name)
        line["seconds"] = round(time.monotonic() - started, 3)
        emit(line)
        return bool(line["ok"])

    def connect(self) -> dict[str, Any]:
        """``QiskitRuntimeService()`` with no arguments: everything comes from the environment."""
        from qiskit_ibm_runtime import QiskitRuntimeService

        self.service = QiskitRuntimeService()
        return {"channel": getattr(self.service, "channel", None)}

    def backends(self) -> dict[str, Any]:
        """``service.backends()`` lists the server's fake backends, and ``service.backend(name)`` finds one."""
        names = [backend.name for backend in self.service.backends()]
        assert BACKEND in names, f"{BACKEND} not among {len(names)} backends: {names[:10]}"
        self.backend = self.service.backend(BACKEND)
        assert self.backend.num_qubits >= 2, self.backend.num_qubits
        return {"count": len(names), "backend": self.backend.name, "num_qubits": self.backend.num_qubits}

    def sampler(self) -> dict[str, Any]:
        """SamplerV2 on the backend: a transpiled Bell circuit gives mostly 00 and 11."""
        from qiskit_ibm_runtime import SamplerV2

        job = SamplerV2(mode=self.backend).run([isa(bell(measure=True), self.backend)], shots=SHOTS)
        self.job_ids.append(job.job_id())
        result = job.result(timeout=RESULT_TIMEOUT)
        self.sampler_counts = counts_of(result[0])
        return {"job_id": job.job_id(), **check_bell(self.sampler_counts, SHOTS)}

    def estimator(self) -> dict[str, Any]:
        """EstimatorV2 on the backend: <ZZ> of the Bell state is close to 1."""
        from qiskit.quantum_info import SparsePauliOp
        from qiskit_ibm_runtime import EstimatorV2

        circuit = isa(bell(measure=False), self.backend)
        observable = SparsePauliOp("ZZ").apply_layout(circuit.layout)
        job = EstimatorV2(mode=self.backend).run([(circuit, observable)])
        self.job_ids.append(job.job_id())
        value = float(job.result(timeout=RESULT_TIMEOUT)[0].data.evs)
        assert ZZ_MIN <= value <= 1.05, f"<ZZ> = {value}"
        return {"job_id": job.job_id(), "zz": round(value, 4)}

    def job(self) -> dict[str, Any]:
        """``service.job(id)`` gives back the sampler job, its status and the same counts."""
        assert self.job_ids, "no job to look up"
        job_id = self.job_ids[0]
        job = self.service.job(job_id)
        assert job.job_id() == job_id, job.job_id()
        status = job.status()
        status_name = getattr(status, "name", status)
        assert str(status_name).upper() == "DONE", status
        counts = counts_of(job.result(timeout=RESULT_TIMEOUT)[0])
        assert counts == self.sampler_counts, f"{counts} != {self.sampler_counts}"
        return {"job_id": job_id, "status": str(status_name), "program": job.primitive_id}

    def jobs(self) -> dict[str, Any]:
        """``service.jobs()`` lists the jobs this script made."""
        listed = [job.job_id() for job in self.service.jobs(limit=50)]
        missing = [job_id for job_id in self.job_ids if job_id not in listed]
        assert not missing, f"{missing} not in service.jobs(): {listed}"
        return {"listed": len(listed)}

    def session(self) -> dict[str, Any]:
        """SamplerV2 inside ``Session(backend=...)``: the job carries the session id, the Bell state holds."""
        from qiskit_ibm_runtime import SamplerV2, Session

        with Session(backend=self.backend) as session:
            job = SamplerV2(mode=session).run([isa(bell(measure=True), self.backend)], shots=SHOTS)
            result = job.result(timeout=RESULT_TIMEOUT)
            session_id = session.session_id
        assert session_id, "no session id"
        assert job.session_id == session_id, f"job session {job.session_id} != {session_id}"
        self.job_ids.append(job.job_id())
        return {"session_id": session_id, "job_id": job.job_id(), **check_bell(counts_of(result[0]), SHOTS)}

    def executor_sampler(self) -> dict[str, Any]:
        """The client-side Sampler on the ``executor`` program (``executor_sampler``, 0.47+), where it exists."""
        try:
            module = importlib.import_module("qiskit_ibm_runtime.executor_sampler")
        except ImportError as error:
            return {"skipped": True, "reason": f"no qiskit_ibm_runtime.executor_sampler ({error})"}
        # 0.47 to 0.50 call it SamplerV2; 0.51 calls it Sampler (SamplerV2 kept as an alias).
        cls = getattr(module, "Sampler", None) or module.SamplerV2
        job = cls(mode=self.backend).run([isa(bell(measure=True), self.backend)], shots=SHOTS)
        self.job_ids.append(job.job_id())
        result = job.result(timeout=RESULT_TIMEOUT)
        return {
            "class": f"executor_sampler.{cls.__name__}",
            "job_id": job.job_id(),
            "program": getattr(job, "primitive_id", None),
            **check_bell(counts_of(result[0]), SHOTS),
        }


def main() -> int:
    """Run every step in order; a failed connect or backends step ends the run (the rest need them)."""
    started = time.monotonic()
    versions: dict[str, str | None] = {}
    for name in ("qiskit-ibm-runtime", "qiskit", "requests", "ibm-cloud-sdk-core"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    emit({"name": "versions", "ok": True, "seconds": 0.0, "versions": versions, "python": sys.version.split()[0]})
    run = Run()
    if run.step("connect", run.connect) and run.step("backends", run.backends):
        run.step("sampler", run.sampler)
        run.step("estimator", run.estimator)
        run.step("job", run.job)
        run.step("jobs", run.jobs)
        run.step("session", run.session)
        run.step("executor_sampler", run.executor_sampler)
    emit(
        {
            "name": "summary",
            "ok": not run.failed,
            "failed": run.failed,
            "skipped": run.skipped,
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
