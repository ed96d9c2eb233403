"""QRS_PRELOAD_BACKENDS: the simulation process builds those noise models before its first job."""

from __future__ import annotations

from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.worker.engines.aer import backend_noise_model
from qiskit_runtime_server.worker.simulation_process import warm_up


def test_preload_setting_is_a_comma_separated_list() -> None:
    settings = load_settings({"QRS_PRELOAD_BACKENDS": " fake_manila, ,fake_lagos "})
    assert settings.preload == ("fake_manila", "fake_lagos")
    assert load_settings({}).preload == ()


def test_warm_up_builds_noise_models_and_skips_unknown_backends() -> None:
    backend_noise_model.cache_clear()
    warm_up("CPU", ("fake_manila", "fake_no_such_device"))
    assert backend_noise_model.cache_info().currsize == 1
    before = backend_noise_model.cache_info().hits
    backend_noise_model("fake_manila")
    assert backend_noise_model.cache_info().hits == before + 1
