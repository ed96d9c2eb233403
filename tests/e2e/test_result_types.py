"""Decoded results have local testing mode's types, shapes, dtypes and metadata keys.

Table-driven: for the sampler and the estimator (V2 primitives and the executor-based ones),
each PUB shape kind (scalar, 1-d, broadcast) runs once on this server through the unmodified
client and once in the client's local testing mode on the same fake backend, and the structure
of the two decoded ``PrimitiveResult`` objects is compared (values are not: they are random).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives.containers import BitArray
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")

SHAPES = ["scalar", "1d", "broadcast"]
PRIMITIVES = ["SamplerV2", "EstimatorV2", "executor Sampler", "executor Estimator"]
# PUB metadata keys of the executor primitives where IBM's documented format and local testing
# mode differ. The client's post-processors put a simulator's plain-dict item metadata under
# "executor" (local mode); IBM answers ItemMetadata, which they turn into "compilation" (always
# for the Estimator, only with scheduler timing or stretch values for the Sampler). This server
# answers as IBM does.
IBM_PUB_METADATA = {
    "executor Sampler": {"executor": None},
    "executor Estimator": {"executor": "compilation"},
}
# Local testing mode ignores EstimatorV2's resilience options; IBM (and this server) run its
# default level 1 (TREX with measurement twirling), which adds these PUB metadata keys and field.
IBM_EXTRA_METADATA = {"EstimatorV2": ["num_randomizations", "resilience"]}
IBM_EXTRA_FIELDS = {"EstimatorV2": ["ensemble_standard_error"]}


def _field(value: Any) -> tuple:
    """The structure of one data field: a BitArray's shape and sizes, or a numpy value's."""
    if isinstance(value, BitArray):
        return ("BitArray", value.shape, value.num_shots, value.num_bits)
    assert isinstance(value, (np.ndarray, np.generic)), f"not a numpy value: {type(value).__name__}"
    return ("numpy", np.shape(value), str(np.asarray(value).dtype))


def _structure(result: Any, renames: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Types, shapes, dtypes and metadata keys of a ``PrimitiveResult``'s PUB results;
    ``renames`` maps metadata keys to IBM's (``None`` drops the key)."""
    renames = renames or {}
    pubs = []
    for pub in result:
        keys = (renames.get(key, key) for key in pub.metadata)
        pubs.append(
            {
                "type": type(pub).__name__,
                "metadata": sorted(key for key in keys if key is not None),
                "data_shape": pub.data.shape,
                "fields": {name: _field(pub.data[name]) for name in pub.data},
            }
        )
    return {"type": type(result).__name__, "pubs": pubs}


def _circuits(backend) -> tuple[QuantumCircuit, QuantumCircuit, list[SparsePauliOp]]:  # type: ignore[no-untyped-def]
    theta = Parameter("t")
    qc = QuantumCircuit(2)
    qc.rx(theta, 0)
    qc.cx(0, 1)
    isa = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=3).run(qc)
    measured = qc.copy()
    measured.measure_all()
    isa_measured = generate_preset_pass_manager(backend=backend, optimization_level=1, seed_transpiler=3).run(measured)
    observables = [SparsePauliOp(label).apply_layout(isa.layout) for label in ("ZZ", "ZI")]
    return isa, isa_measured, observables


def _pub(primitive: str, shape: str, backend) -> tuple:  # type: ignore[no-untyped-def]
    isa, measured, (zz, zi) = _circuits(backend)
    if "Sampler" in primitive:
        values = {"scalar": [0.3], "1d": [[0.1], [0.2], [0.3]], "broadcast": np.zeros((2, 3, 1))}[shape]
        return (measured, values)
    if shape == "scalar":
        return (isa, zz, [0.3])
    if shape == "1d":
        return (isa, [zz, zi], [0.3])
    return (isa, [[zz], [zi]], np.linspace(0, 1, 3).reshape(1, 3, 1))


def _run(primitive: str, mode: Any, pub: tuple) -> Any:
    from qiskit_ibm_runtime import EstimatorV2, SamplerV2
    from qiskit_ibm_runtime.executor_estimator import Estimator
    from qiskit_ibm_runtime.executor_sampler import Sampler

    if primitive == "SamplerV2":
        return SamplerV2(mode=mode).run([pub], shots=64).result()
    if primitive == "executor Sampler":
        return Sampler(mode=mode).run([pub], shots=64).result()
    if primitive == "EstimatorV2":
        return EstimatorV2(mode=mode).run([pub], precision=0.1).result()
    return Estimator(mode=mode).run([pub], precision=0.1).result()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_result_structure_matches_local_testing_mode(embedded_service, primitive: str, shape: str) -> None:
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    local_backend = FakeManilaV2()
    remote_backend = embedded_service.backend("fake_manila")
    local = _run(primitive, local_backend, _pub(primitive, shape, local_backend))
    remote = _run(primitive, remote_backend, _pub(primitive, shape, remote_backend))
    expected = _structure(local, IBM_PUB_METADATA.get(primitive))
    for pub_structure in expected["pubs"]:
        pub_structure["metadata"] = sorted(pub_structure["metadata"] + IBM_EXTRA_METADATA.get(primitive, []))
        for name in IBM_EXTRA_FIELDS.get(primitive, []):
            pub_structure["fields"][name] = pub_structure["fields"]["stds"]
    assert _structure(remote) == expected
    # The server adds its own keys (simulator, ignored options) but drops none of local mode's.
    assert set(local.metadata) <= set(remote.metadata)
    if "Estimator" in primitive:
        data = remote[0].data
        assert np.shape(data.stds) == np.shape(data.evs) == data.shape


@pytest.fixture
def embedded_service(embedded, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The unmodified client on the embedded server (the structure does not depend on the deployment)."""
    for key in ("QISKIT_IBM_INSTANCE", "QISKIT_IBM_CHANNEL", "QISKIT_FUNCTIONS_EXPERIMENTAL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in embedded.client_env().items():
        monkeypatch.setenv(key, value)
    from qiskit_ibm_runtime import QiskitRuntimeService

    return QiskitRuntimeService()


def test_sampler_reports_execution_spans_as_ibm_does(embedded_service) -> None:
    """IBM's SamplerV2 results carry ``metadata["execution"]["execution_spans"]``: when each
    PUB's shots were taken, usable with each span's ``mask`` and ``draw_execution_spans``."""
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.execution_span import ExecutionSpans

    backend = embedded_service.backend("fake_manila")
    scalar = _pub("SamplerV2", "scalar", backend)
    broadcast = _pub("SamplerV2", "broadcast", backend)
    result = SamplerV2(mode=backend).run([scalar, broadcast], shots=64).result()
    spans = result.metadata["execution"]["execution_spans"]
    assert isinstance(spans, ExecutionSpans) and len(spans) >= 1
    assert spans.start <= spans.stop
    assert spans.pub_idxs == [0, 1]
    covered = np.logical_or.reduce([span.mask(1) for span in spans.filter_by_pub(1)])
    assert covered.shape == (2, 3, 64) and covered.all()
    assert np.logical_or.reduce([span.mask(0) for span in spans.filter_by_pub(0)]).shape == (64,)
