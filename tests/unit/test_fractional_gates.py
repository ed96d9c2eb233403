"""Fractional gates on Heron and Nighthawk devices: the served JSON (shared/fractional.py), the
client's view of it with and without ``use_fractional_gates``, and the worker's target and noise
model (worker/fractional.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from qiskit_runtime_server.shared.backends import BackendCatalog
from qiskit_runtime_server.shared.fractional import (
    fractional_configuration,
    fractional_properties,
    offers_fractional_gates,
)

HERON_CLASS = [
    "fake_aachen",
    "fake_boston",
    "fake_fez",
    "fake_kingston",
    "fake_marrakesh",
    "fake_pittsburgh",
    "fake_torino",
    "fake_berlin",
    "fake_miami",
    "fake_nighthawk",
]


@pytest.fixture(scope="module")
def catalog() -> BackendCatalog:
    return BackendCatalog(aliases="")


def _gates(props: dict[str, Any], name: str) -> dict[tuple[int, ...], dict[str, float]]:
    return {
        tuple(g["qubits"]): {p["name"]: p["value"] for p in g["parameters"]}
        for g in props["gates"]
        if g["gate"] == name
    }


def test_which_devices_offer_them(catalog: BackendCatalog) -> None:
    offering = {name for name in catalog.names(include_mocks=False) if name.startswith("fake_")}
    offering = {name for name in offering if offers_fractional_gates(catalog.get(name).device.raw_configuration)}
    assert offering == {*HERON_CLASS, "fake_fractional"}


@pytest.mark.parametrize("name", HERON_CLASS)
def test_configuration_lists_rzz_on_cz_pairs_and_rx_on_every_qubit(catalog: BackendCatalog, name: str) -> None:
    served = catalog.get(name)
    raw, conf = served.device.raw_configuration, served.configuration
    assert conf["basis_gates"] == sorted([*raw["basis_gates"], "rx", "rzz"])  # type: ignore[list-item]
    assert {"rx", "rzz"} <= set(conf["supported_instructions"])  # type: ignore[arg-type]
    gates = {g["name"]: g for g in conf["gates"]}  # type: ignore[attr-defined]
    assert gates["rzz"]["coupling_map"] == gates["cz"]["coupling_map"]
    assert gates["rx"]["coupling_map"] == gates["sx"]["coupling_map"]
    props = served.properties
    assert props is not None
    cz, rzz, sx, rx = (_gates(props, gate) for gate in ("cz", "rzz", "sx", "rx"))
    assert rzz.keys() == cz.keys() and rx.keys() == sx.keys()
    for pair, values in rzz.items():
        # Kept where the snapshot calibrated rzz, else the pair's cz.
        assert values["gate_error"] < 1 or cz[pair]["gate_error"] == 1
    assert rx == sx


def test_calibrated_rzz_is_kept_and_uncalibrated_derived(catalog: BackendCatalog) -> None:
    fez = catalog.get("fake_fez")
    raw = _gates(fez.device.raw_properties, "rzz")  # type: ignore[arg-type]
    served = _gates(fez.properties, "rzz")  # type: ignore[arg-type]
    cz = _gates(fez.properties, "cz")  # type: ignore[arg-type]
    calibrated = [pair for pair, values in raw.items() if values["gate_error"] < 1]
    uncalibrated = [pair for pair, values in raw.items() if values["gate_error"] == 1 and cz[pair]["gate_error"] < 1]
    assert calibrated and uncalibrated
    assert all(served[pair] == raw[pair] for pair in calibrated)
    assert all(served[pair] == cz[pair] for pair in uncalibrated)
    # fake_miami's snapshot has no rzz at all: every pair takes its cz.
    miami = catalog.get("fake_miami")
    assert _gates(miami.properties, "rzz") == _gates(miami.properties, "cz")  # type: ignore[arg-type]


def test_other_devices_and_inputs_are_left_as_they_are(catalog: BackendCatalog) -> None:
    for name in ("fake_sherbrooke", "fake_manila", "fake_fractional"):
        device = catalog.get(name).device
        assert fractional_configuration(device.raw_configuration) is device.raw_configuration
        if device.raw_properties is not None:
            assert fractional_properties(device.raw_properties, device.raw_configuration) is device.raw_properties
    torino = catalog.get("fake_torino").device
    before = copy.deepcopy((torino.raw_configuration, torino.raw_properties))
    fractional_properties(torino.raw_properties, torino.raw_configuration)  # type: ignore[arg-type]
    fractional_configuration(torino.raw_configuration)
    assert (torino.raw_configuration, torino.raw_properties) == before


@pytest.mark.parametrize("use_fractional_gates", [True, False])
def test_the_clients_decoding_with_and_without_the_flag(catalog: BackendCatalog, use_fractional_gates: bool) -> None:
    from qiskit_ibm_runtime.utils.backend_converter import convert_to_target
    from qiskit_ibm_runtime.utils.backend_decoder import configuration_from_server_data, properties_from_server_data

    served = catalog.get("ibm_torino")
    conf = configuration_from_server_data(
        copy.deepcopy(served.configuration), use_fractional_gates=use_fractional_gates
    )
    props = properties_from_server_data(copy.deepcopy(served.properties), use_fractional_gates=use_fractional_gates)  # type: ignore[arg-type]
    assert conf is not None
    target = convert_to_target(conf, props, include_fractional_gates=use_fractional_gates)
    if use_fractional_gates:
        assert {"rx", "rzz"} <= set(conf.basis_gates)
        assert target["rzz"][(0, 1)].error == target["cz"][(0, 1)].error
        assert target["rzz"][(0, 1)].duration == target["cz"][(0, 1)].duration
        rx, sx = target["rx"][(5,)], target["sx"][(5,)]
        assert (rx.error, rx.duration) == (sx.error, sx.duration)
    else:  # today's configuration
        assert conf.basis_gates == served.device.raw_configuration["basis_gates"]
        assert not {"rx", "rzz"} & set(target.operation_names)


def test_worker_noise_model_gives_rzz_and_rx_their_derived_errors() -> None:
    from qiskit_runtime_server.worker.engines.aer import backend_noise_model, fake_backend

    target = fake_backend("fake_torino").target
    assert target["rzz"][(0, 1)].error == target["cz"][(0, 1)].error
    model = backend_noise_model("fake_torino")
    assert {"rzz", "rx"} <= set(model.noise_instructions)
    errors = model._local_quantum_errors
    # Same error and duration as the pair's cz (sx's for rx): the same channel.
    assert errors["rzz"][(0, 1)] == errors["cz"][(0, 1)]
    assert errors["rx"][(3,)] == errors["sx"][(3,)]
    # Devices without fractional gates keep their target and noise model.
    assert "rzz" not in fake_backend("fake_manila").target
