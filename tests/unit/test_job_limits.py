"""Per-job bounds (shared/job_limits.py): small bodies that would expand into gigabytes are refused
at ``POST /jobs`` (400/413) and, should one reach a worker, fail the job at once with the same reason,
before ``RuntimeDecoder`` inflates anything."""

from __future__ import annotations

import base64
import json
import resource
import zlib

import httpx
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit_ibm_runtime import RuntimeEncoder

from qiskit_runtime_server.shared.job_limits import DecodedTooLarge, JobLimitExceeded, JobLimits, check_params
from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.jobspec import ExecutionRequest
from qiskit_runtime_server.worker.runner import ProgramRunner


def _circuit(num_qubits: int = 2, *, measured: bool = True) -> dict[str, str]:
    qc = QuantumCircuit(num_qubits)
    qc.sx(0)  # in fake_manila's basis: the worker checks ISA circuits before it simulates
    if measured:
        qc.measure_all()
    return json.loads(json.dumps(qc, cls=RuntimeEncoder))  # type: ignore[no-any-return]


def operator_body() -> bytes:
    """The 768-byte body: an ``Operator`` built from a 13-qubit circuit, inside the options."""
    operator = {
        "__type__": "settings",
        "__module__": "qiskit.quantum_info.operators.operator",
        "__class__": "Operator",
        "__value__": {"data": _circuit(13, measured=False)},
    }
    return json.dumps({"pubs": [[_circuit(), None, 10]], "options": {"x": operator}, "version": 2}).encode()


def big_ndarray_body() -> bytes:
    """About 1 MB: a zlib-compressed .npy of 10^8 float64 zeros as the parameter values."""
    shape = (10**8 // 2, 2)
    header = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    npy_head = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    deflate = zlib.compressobj()
    parts = [deflate.compress(npy_head)]
    zeros = bytes(8 * 2**20)
    left = 8 * 10**8
    while left:
        parts.append(deflate.compress(zeros[: min(left, len(zeros))]))
        left -= min(left, len(zeros))
    parts.append(deflate.flush())
    blob = base64.standard_b64encode(b"".join(parts)).decode()
    qc = QuantumCircuit(2)
    qc.rx(Parameter("a"), 0)
    qc.rx(Parameter("b"), 1)
    qc.measure_all()
    pub = [json.loads(json.dumps(qc, cls=RuntimeEncoder)), {"__type__": "ndarray", "__value__": blob}, 10]
    return json.dumps({"pubs": [pub], "version": 2}).encode()


def many_pubs_body(count: int) -> bytes:
    return json.dumps({"pubs": [[_circuit(), None, 1]] * count, "version": 2}).encode()


def many_shots_body() -> bytes:
    return json.dumps({"pubs": [[_circuit(), None, 10**7]] * 3, "version": 2}).encode()


@pytest.fixture(scope="module")
def ndarray_body() -> bytes:
    return big_ndarray_body()


def test_operator_from_a_circuit_is_refused() -> None:
    body = operator_body()
    assert len(body) < 1200
    with pytest.raises(JobLimitExceeded, match="operator"):
        check_params(body, "sampler", JobLimits())


def test_operators_as_the_client_encodes_them_pass() -> None:
    from qiskit.quantum_info import Operator, SparsePauliOp

    options = {"a": SparsePauliOp(["XZ", "YY"]), "b": Operator.from_label("XY")}
    body = json.dumps({"pubs": [[QuantumCircuit(1), None, 10]], "options": options}, cls=RuntimeEncoder)
    check_params(body.encode(), "sampler", JobLimits())


def test_compressed_ndarray_is_inflated_within_the_bound(ndarray_body: bytes) -> None:
    assert len(ndarray_body) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodedTooLarge, match="QRS_MAX_DECODED_BYTES"):
        check_params(ndarray_body, "sampler", JobLimits())
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 64
    # With room to inflate it, the .npy header's 10^8 values are what is refused.
    with pytest.raises(JobLimitExceeded, match="QRS_MAX_PARAMETER_VALUES"):
        check_params(ndarray_body, "sampler", JobLimits(max_decoded_bytes=2**31))


def test_pub_count_and_total_shots_are_bounded() -> None:
    with pytest.raises(JobLimitExceeded, match="QRS_MAX_PUBS"):
        check_params(many_pubs_body(10_001), "sampler", JobLimits())
    check_params(many_pubs_body(100), "sampler", JobLimits())
    with pytest.raises(JobLimitExceeded, match="QRS_MAX_JOB_SHOTS"):
        check_params(many_shots_body(), "sampler", JobLimits())
    one = json.dumps({"pubs": [[_circuit(), None, 10**7]]}).encode()
    check_params(one, "sampler", JobLimits())


def test_bindings_times_shots_counts_the_sweep() -> None:
    import numpy as np

    qc = QuantumCircuit(1)
    qc.rx(Parameter("a"), 0)
    values = np.zeros((1000, 1))
    body = json.dumps({"pubs": [(qc, values, 20_000)]}, cls=RuntimeEncoder).encode()
    with pytest.raises(JobLimitExceeded, match="bindings x shots"):
        check_params(body, "sampler", JobLimits())
    check_params(body, "sampler", JobLimits(max_job_shots=20_000_000))


@pytest.mark.parametrize(
    ("name", "status"),
    [("operator", 400), ("ndarray", 413), ("pubs", 400), ("shots", 400)],
)
async def test_post_jobs_refuses_oversized_jobs(
    client: httpx.AsyncClient, ndarray_body: bytes, name: str, status: int
) -> None:
    params = {
        "operator": operator_body,
        "ndarray": lambda: ndarray_body,
        "pubs": lambda: many_pubs_body(265_052 // 20),
        "shots": many_shots_body,
    }[name]()
    body = b'{"program_id": "sampler", "backend": "fake_manila", "params": ' + params + b"}"
    response = await client.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["errors"][0]
    assert error["code"] == {400: "bad_request", 413: "payload_too_large"}[status]
    assert "QRS_MAX_" in error["message"] or "operator" in error["message"]


async def test_the_worker_fails_such_a_job_at_once_with_the_reason(ndarray_body: bytes) -> None:
    runner = ProgramRunner(memory_limit_mb=512)
    try:
        for params, reason in ((operator_body(), "operator"), (ndarray_body, "QRS_MAX_DECODED_BYTES")):
            request = ExecutionRequest(job_id="j", program_id="sampler", backend="fake_manila", params=params)
            with pytest.raises(ProgramError, match=reason):
                await runner.run(request)
        ok = ExecutionRequest(job_id="k", program_id="sampler", backend="fake_manila", params=many_pubs_body(2))
        assert (await runner.run(ok)).num_pubs == 2
    finally:
        await runner.close()


def test_the_check_itself_stays_small_on_a_body_of_plain_numbers() -> None:
    import tracemalloc

    body = b'{"pubs": [[1, null, 10]], "options": {"x": [' + b"0.5," * 2_000_000 + b"0.5]}}"
    tracemalloc.start()
    try:
        check_params(body, "sampler", JobLimits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(body), (peak, len(body))  # the text, once decoded, and 8 bytes per number


def test_deeply_nested_params_are_a_400_not_a_crash() -> None:
    from qiskit_runtime_server.shared.errors import InvalidRequest

    body = b'{"pubs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidRequest):
        check_params(body, "sampler", JobLimits())
