"""Fractional gates (``rzz``, ``rx``) with ``use_fractional_gates=True``, over real HTTP.

The client's own ``test_backend_fractional_gates_cache_behavior`` (its integration suite, on
``ibm_miami``) as it is written, then on a Heron, the gates in the backend's ``Target`` with the
errors the server derives, a job using them, and their noise in its result.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from qiskit import QuantumCircuit

pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning, module="qiskit_ibm_runtime")


@pytest.mark.parametrize("name", ["ibm_miami", "fake_torino"])
def test_backend_fractional_gates_cache_behavior(service, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The client's test, its calls as written. Its two ``assertIs`` cannot hold with client
    0.51 against any server: ``_create_backend_obj`` returns a new ``IBMBackend`` on every call,
    with a deep copy of the configuration. What they test, that a repeated flag reuses the cached
    configuration and a changed one fetches it again, is asserted on the configuration fetches."""
    from qiskit_ibm_runtime.api.client import RuntimeClient

    fetches: list[str] = []
    fetch = RuntimeClient.backend_configuration

    def counted(self, backend_name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        fetches.append(backend_name)
        return fetch(self, backend_name, *args, **kwargs)

    monkeypatch.setattr(RuntimeClient, "backend_configuration", counted)

    def fetched(call):  # type: ignore[no-untyped-def]
        before = len(fetches)
        backend = call()
        return backend, len(fetches) > before

    backend_fg, first = fetched(lambda: service.backend(name, use_fractional_gates=True))
    backend_fg2, again_fg = fetched(lambda: service.backend(name, use_fractional_gates=True))
    backend_no_fg, changed = fetched(lambda: service.backend(name, use_fractional_gates=False))
    backend_no_fg2, again_no_fg = fetched(lambda: service.backend(name, use_fractional_gates=False))
    backend_fg3, changed_back = fetched(lambda: service.backend(name, use_fractional_gates=True))

    assert first
    assert not again_fg, "Cache was not used for repeated use_fractional_gates=True"
    assert changed and backend_fg is not backend_no_fg, (
        "Configuration was not refreshed when use_fractional_gates changed"
    )
    assert not again_no_fg, "Cache was not used to create backend object"
    assert changed_back and backend_no_fg2 is not backend_fg3, (
        "Configuration was not refreshed when use_fractional_gates changed"
    )

    for backend in (backend_fg, backend_fg2, backend_fg3):
        assert {"rzz", "rx"} <= set(backend.basis_gates)
        assert {"rzz", "rx"} <= set(backend.target.operation_names)
    for backend in (backend_no_fg, backend_no_fg2):  # today's configuration
        assert not {"rzz", "rx"} & set(backend.basis_gates)
        assert not {"rzz", "rx"} & set(backend.target.operation_names)


def test_fractional_gates_refused_where_ibm_has_none(service) -> None:
    from qiskit_ibm_runtime.exceptions import IBMInputValueError

    with pytest.raises(IBMInputValueError, match="does not support fractional gates"):
        service.backend("fake_sherbrooke", use_fractional_gates=True)


def test_fractional_gates_carry_derived_errors_and_are_simulated_with_them(service) -> None:
    from qiskit_ibm_runtime import SamplerV2

    backend = service.backend("fake_torino", use_fractional_gates=True)
    target = backend.target
    # fake_torino's snapshot has no calibrated rzz (gate_error 1 everywhere): derived from cz.
    pair = (0, 1)
    assert target["rzz"][pair].error == pytest.approx(target["cz"][pair].error)
    assert target["rzz"][pair].duration == pytest.approx(target["cz"][pair].duration)
    assert target["rx"][(0,)].error == pytest.approx(target["sx"][(0,)].error)

    # 40 rzz(pi/2) (a multiple of 4: the identity up to phase) and 40 rx(pi/2) on each qubit
    # bring |00> back to |00>; each gate's error pulls P(00) below 1.
    qc = QuantumCircuit(target.num_qubits, 2)
    for _ in range(40):
        qc.rzz(np.pi / 2, *pair)
        qc.rx(np.pi / 2, 0)
        qc.rx(np.pi / 2, 1)
        qc.barrier(*pair)
    qc.measure(pair, [0, 1])
    shots = 4000
    sampler = SamplerV2(mode=backend)
    sampler.options.simulator.seed_simulator = 3
    counts = sampler.run([qc], shots=shots).result()[0].data.c.get_counts()
    p00 = counts.get("00", 0) / shots
    # 0.67 measured: 40 rzz at 0.5% error, 80 rx, relaxation over ~5 us and readout error.
    assert 0.5 < p00 < 0.95, counts

    # rzz outside [0, pi/2] is refused by the client's check as by IBM's.
    bad = QuantumCircuit(target.num_qubits, 1)
    bad.rzz(2.0, *pair)
    bad.measure(0, 0)
    with pytest.raises(Exception, match=r"range \[0, pi/2\]"):
        sampler.run([bad])
