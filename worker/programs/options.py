"""The primitive options a simulator honours, and the report of the ones it cannot.

The client sends only the options a user set, as nested dicts (PROTOCOL.md §5.2). Honoured:
``default_shots``, ``default_precision`` (estimator), ``simulator.seed_simulator`` and
``simulator.noise_model``. Options that only make sense on hardware (dynamical decoupling,
twirling, resilience, rep_delay...) are accepted, have no effect on a simulator, and are listed
in the result metadata under ``ignored_options`` and in the job log.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from qiskit_aer.noise import NoiseModel

from worker.errors import ProgramError

# Options consumed elsewhere (client side, or the API/worker itself), so not "ignored".
_HANDLED_ELSEWHERE = {"max_execution_time", "environment", "experimental"}


@dataclass
class SimulatorChoices:
    """Options that change the simulation; ``ignored`` holds the rest, nested as received."""

    default_shots: int | None = None
    default_precision: float | None = None
    seed: int | None = None
    noise_model: NoiseModel | None = None
    ignored: dict[str, Any] = field(default_factory=dict)


def _pop_int(options: dict[str, Any], key: str, minimum: int = 1) -> int | None:
    value = options.pop(key, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProgramError(f"Option {key} must be an integer >= {minimum}, got {value!r}.")
    return value


def parse_options(raw: dict[str, Any] | None, *, estimator: bool) -> SimulatorChoices:
    """Split the options dict into what the simulator honours and what it ignores.

    Raises:
        ProgramError: an honoured option has an invalid value.
    """
    options = copy.deepcopy(raw or {})
    choices = SimulatorChoices(default_shots=_pop_int(options, "default_shots"))
    if estimator and (precision := options.pop("default_precision", None)) is not None:
        if not isinstance(precision, (int, float)) or precision <= 0:
            raise ProgramError(f"Option default_precision must be a positive number, got {precision!r}.")
        choices.default_precision = float(precision)
    simulator = options.pop("simulator", None) or {}
    if not isinstance(simulator, dict):
        raise ProgramError("Option simulator must be a mapping.")
    choices.seed = _pop_int(simulator, "seed_simulator", minimum=0)
    noise_model = simulator.pop("noise_model", None)
    if noise_model is not None and not isinstance(noise_model, NoiseModel):
        raise ProgramError("Option simulator.noise_model must be a qiskit_aer NoiseModel.")
    choices.noise_model = noise_model
    if simulator:
        options["simulator"] = simulator
    for key in _HANDLED_ELSEWHERE:
        options.pop(key, None)
    choices.ignored = options
    return choices
