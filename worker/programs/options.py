"""The primitive options a simulator honours, and the report of the ones it cannot.

The client sends only the options a user set, as nested dicts (docs/protocol.md §5.2). Honoured:
``default_shots``, ``default_precision`` (estimator), ``simulator.seed_simulator`` and
``simulator.noise_model``; the estimator's ``resilience_level``, ``resilience`` and ``twirling``
are taken out before this by ``estimator_resilience.plan_resilience``, which honours them. Options
that only make sense on hardware (dynamical decoupling, the sampler's twirling, rep_delay...) are
accepted, have no effect on a simulator, and are listed in the result metadata under
``ignored_options`` and in the job log.

The report keeps small values as sent (``{"dynamical_decoupling": {"enable": True}}``) but
never copies a large one into the result: a string, list or other object above
``MAX_REPORTED_VALUE`` characters is replaced by a short description of it (a 60 MB ignored
option was once stored twice, in params and in the result).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from qiskit_aer.noise import NoiseModel

from qiskit_runtime_server.worker.errors import ProgramError

# Largest ignored value (characters of its repr, items of a list) copied into the result metadata.
MAX_REPORTED_VALUE = 256
# Nesting, and entries of one mapping or list, beyond which an ignored value is summarised.
MAX_REPORTED_DEPTH = 4
MAX_REPORTED_ITEMS = 64

# Options consumed elsewhere (client side, or the API/worker itself), so not "ignored".
_HANDLED_ELSEWHERE = {"max_execution_time", "environment", "experimental"}


@dataclass
class SimulatorChoices:
    """Options that change the simulation; ``ignored`` holds the rest, nested as received with
    large values summarised (``_report``)."""

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


def _reportable(value: Any, depth: int = 0) -> Any:
    """``value`` itself when small, else a short text naming its type and size (never its content)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_REPORTED_VALUE else f"<str of {len(value)} characters, not copied>"
    if isinstance(value, dict | list | tuple) and depth < MAX_REPORTED_DEPTH and len(value) <= MAX_REPORTED_ITEMS:
        small: Any
        if isinstance(value, dict):
            small = {str(k)[:MAX_REPORTED_VALUE]: _reportable(v, depth + 1) for k, v in value.items()}
        else:
            small = [_reportable(v, depth + 1) for v in value]
        if len(repr(small)) <= MAX_REPORTED_VALUE * 4:
            return small
    if isinstance(value, dict | list | tuple):
        kind = "mapping" if isinstance(value, dict) else "list"
        return f"<{kind} of {len(value)} items, not copied>"
    return f"<{type(value).__name__}, not copied>"


def report_ignored(options: dict[str, Any]) -> dict[str, Any]:
    """The ignored options as reported: every name (up to ``MAX_REPORTED_ITEMS``), small values."""
    names = list(options)
    report = {str(name)[:MAX_REPORTED_VALUE]: _reportable(options[name]) for name in names[:MAX_REPORTED_ITEMS]}
    if len(names) > MAX_REPORTED_ITEMS:
        report["..."] = f"<{len(names) - MAX_REPORTED_ITEMS} more options, not copied>"
    return report


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
    choices.ignored = report_ignored(options)
    return choices
