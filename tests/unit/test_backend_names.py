"""The catalogue's names: IBM device names, aliases, mocks and calibration ids (shared/backends.py)."""

from __future__ import annotations

import re

import pytest

from qiskit_runtime_server.shared.backends import BackendCatalog, CalibrationNotFound, dry_run_name, ibm_device_name


def test_dry_run_name_follows_the_clients_rule() -> None:
    # qiskit_runtime_service._run: re.sub(r"^[^_]+", "mock", backend.name)
    for name in ("fake_sherbrooke", "ibm_sherbrooke", "ibmq_16_melbourne", "lab_device"):
        assert dry_run_name(name) == re.sub(r"^[^_]+", "mock", name)
    assert dry_run_name("mock_manila") is None
    assert dry_run_name("ibmqx2") is None


def test_ibm_device_names() -> None:
    assert ibm_device_name("sherbrooke", "ibm_sherbrooke") == "ibm_sherbrooke"
    assert ibm_device_name("manila", "ibmq_manila") == "ibmq_manila"
    assert ibm_device_name("auckland", "alt_auckland") == "ibm_auckland"
    assert ibm_device_name("fractional", "fake_fractional") is None


def test_every_name_of_a_device_shares_its_snapshot() -> None:
    catalog = BackendCatalog(aliases="lab=fake_manila")
    names = ("fake_manila", "ibmq_manila", "lab", "mock_manila")
    assert {catalog.get(n).calibration_id for n in names} == {catalog.get("fake_manila").calibration_id}
    assert catalog.get("mock_manila").is_mock and catalog.get("mock_manila").simulated == "fake_manila"
    assert catalog.same_queue("lab") == ["fake_manila", "ibmq_manila", "lab"]
    assert not any(n.startswith("mock_") for n in catalog.names(include_mocks=False))
    catalog.get("lab").check_calibration(catalog.get("fake_manila").calibration_id)
    with pytest.raises(CalibrationNotFound):
        catalog.get("lab").check_calibration("no-such-id")


@pytest.mark.parametrize(
    "aliases, message",
    [
        ("lab", "expected alias=backend"),
        ("lab=fake_nowhere", "no backend is called 'fake_nowhere'"),
        ("fake_lima=fake_manila", "already the name of a backend"),
        ("mock_lab=fake_manila", "not a usable backend name"),
        ("a b=fake_manila", "not a usable backend name"),
    ],
)
def test_bad_aliases_name_the_variable(aliases: str, message: str) -> None:
    with pytest.raises(ValueError, match="QRS_BACKEND_ALIASES") as info:
        BackendCatalog(aliases=aliases)
    assert message in str(info.value)
