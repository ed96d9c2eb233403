"""IBM-like timing (``QRS_TIMING``, docs/timing.md): which jobs wait in ``Queued`` and for how long.

With timing on for a backend, a new job waits a queue time drawn from ``QRS_QUEUE_TIME`` before a
worker may take it (its arq entry is deferred, ``shared/queue.py``), then stays ``Running`` for
at least the QPU time IBM would bill (``worker/programs/qpu_time.py``). The API decides at
submission and writes the per-job overhead into the record (``JobRecord.qpu_overhead``), so
workers need no timing settings of their own. No qiskit here: the API imports this module.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qiskit_runtime_server.shared.backends import BackendCatalog

MODES = ("off", "ibm")


@dataclass(frozen=True)
class QueueTime:
    """A queue-time distribution in seconds: ``fixed:S``, ``uniform:A,B`` or ``exp:MEAN``."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> QueueTime:
        """Read ``fixed:3``, ``uniform:2,10`` or ``exp:5`` (a bare number is ``fixed``).

        Raises:
            ValueError: another form, or a negative or empty range.
        """
        kind, _, args = text.strip().partition(":")
        if not args:
            kind, args = "fixed", kind
        try:
            values = [float(v) for v in args.split(",")]
        except ValueError:
            raise ValueError(f"queue time {text!r}: the numbers cannot be read") from None
        if any(v < 0 for v in values):
            raise ValueError(f"queue time {text!r}: seconds must not be negative")
        if kind in ("fixed", "exp") and len(values) == 1:
            return cls(kind, values[0])
        if kind == "uniform" and len(values) == 2 and values[0] <= values[1]:
            return cls(kind, values[0], values[1])
        raise ValueError(f"queue time {text!r}: expected fixed:S, uniform:A,B (A <= B) or exp:MEAN")

    @property
    def mean(self) -> float:
        return (self.a + self.b) / 2 if self.kind == "uniform" else self.a

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exp":
            return rng.expovariate(1 / self.a) if self.a > 0 else 0.0
        return self.a


def parse_backend_modes(text: str) -> dict[str, str]:
    """``fake_sherbrooke=ibm,fake_manila=off`` as ``{name: mode}``.

    Raises:
        ValueError: an entry without ``=`` or with a mode other than ``off``/``ibm``.
    """
    modes: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, mode = entry.partition("=")
        if not sep or not name.strip() or mode.strip() not in MODES:
            raise ValueError(f"timing backends entry {entry!r}: expected name=ibm or name=off")
        modes[name.strip()] = mode.strip()
    return modes


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"timing {mode!r}: expected one of {', '.join(MODES)}")


class TimingPolicy:
    """The API's view of the timing settings: which backends are timed, and their queue times.

    Args:
        mode: ``QRS_TIMING``, the default of every backend.
        backends: ``QRS_TIMING_BACKENDS``, per-backend modes; a backend matches when any of its
            names (``names_of``) is listed, so ``ibm_sherbrooke=ibm`` covers ``fake_sherbrooke``.
        queue_time: ``QRS_QUEUE_TIME``.
        overhead: ``QRS_QPU_OVERHEAD``, seconds added to every timed job's QPU time.
        seed: ``QRS_TIMING_SEED``; unset draws from the system's entropy.
    """

    def __init__(self, mode: str, backends: str, queue_time: str, overhead: float, seed: int | None) -> None:
        check_mode(mode)
        self.mode = mode
        self.backends = parse_backend_modes(backends)
        self.queue_time = QueueTime.parse(queue_time)
        self.overhead = overhead
        self._rng = random.Random(seed)

    def timed(self, names: Iterable[str]) -> bool:
        """Whether a device served under ``names`` (its name first, then the others) is timed."""
        for name in names:
            if name in self.backends:
                return self.backends[name] == "ibm"
        return self.mode == "ibm"

    def draw_queue_seconds(self) -> float:
        """One job's queue time."""
        return self.queue_time.sample(self._rng)

    def backend_timed(self, catalog: BackendCatalog, name: str) -> bool:
        """Whether jobs on served backend ``name`` are timed: by any name of its device, never
        for a mock device (a dry run on IBM is not queued for a QPU) or an unknown name."""
        if name not in catalog or catalog.get(name).is_mock:
            return False
        return self.timed([name, *catalog.same_queue(name)])

    def mean_queue_seconds(self, catalog: BackendCatalog, name: str) -> float | None:
        """The mean queue time of a job on ``name`` when it is timed, else ``None``."""
        return self.queue_time.mean if self.backend_timed(catalog, name) else None
