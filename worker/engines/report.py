"""What one job's simulation did: methods, widths, predicted time and approximations.

The engine fills a :class:`SimulationReport` as it runs a job's groups; the program puts
:meth:`SimulationReport.metadata` into the result's ``metadata["simulator"]`` and
:meth:`SimulationReport.log_lines` into the job log, so every approximation is stated where the
user reads the values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from qiskit_runtime_server.worker.engines.clifford import Approximation


@dataclass
class SimulationReport:
    """Per-job account of the runs the engine made.

    ``methods`` counts Aer runs by method; ``widest`` is the widest group simulated (qubits);
    ``predicted_seconds`` the sum of the runs' predicted times; ``twirled`` the errors replaced
    by their Pauli twirl (``(instruction, physical qubits)`` to Choi trace-norm distance);
    ``bound`` the largest per-run bound on the change of an expectation value those
    replacements can cause; ``light_cones`` the estimator pieces (``estimator_cones.py``);
    ``reused`` the groups run on reused wires; ``stim_runs`` the stabilizer runs sampled with
    Stim's Pauli frames (``stim_sampler.py``); ``processes`` the processes the estimator
    pieces ran in side by side (``programs/piece_pool.py``).
    """

    methods: Counter[str] = field(default_factory=Counter)
    widest: int = 0
    predicted_seconds: float = 0.0
    twirled: dict[tuple[str, tuple[int, ...]], float] = field(default_factory=dict)
    bound: float = 0.0
    light_cones: int = 0
    reused: int = 0
    stim_runs: int = 0
    processes: int = 1

    def add_run(self, method: str, width: int, seconds: float) -> None:
        self.methods[method] += 1
        self.widest = max(self.widest, width)
        self.predicted_seconds += seconds

    def add_overhead(self, seconds: float) -> None:
        """Add predicted time spent outside simulator runs (twirls drawn, circuits bound)."""
        self.predicted_seconds += seconds

    def add_approximation(self, approximation: Approximation) -> None:
        self.twirled.update(approximation.errors)
        self.bound = max(self.bound, approximation.bound)

    def absorb(self, other: SimulationReport) -> None:
        """Add the runs of ``other`` (a piece helper's part of the same job) to this report."""
        self.methods.update(other.methods)
        self.widest = max(self.widest, other.widest)
        self.predicted_seconds += other.predicted_seconds
        self.twirled.update(other.twirled)
        self.bound = max(self.bound, other.bound)
        self.light_cones += other.light_cones
        self.reused += other.reused
        self.stim_runs += other.stim_runs

    def metadata(self) -> dict[str, Any]:
        """``{"methods": {...}, "widest_group": int, "predicted_seconds": float}``, plus
        ``"light_cones"`` and ``"approximation"`` when they apply."""
        out: dict[str, Any] = {
            "methods": dict(sorted(self.methods.items())),
            "widest_group": self.widest,
            "predicted_seconds": round(self.predicted_seconds, 4),
        }
        if self.light_cones:
            out["light_cones"] = self.light_cones
        if self.reused:
            out["qubit_reuse"] = self.reused
        if self.stim_runs:
            out["stabilizer_sampler"] = "stim"
        if self.processes > 1:
            out["piece_processes"] = self.processes
        if self.twirled:
            worst = max(self.twirled, key=self.twirled.__getitem__)
            out["approximation"] = {
                "kind": "pauli_twirl",
                "description": (
                    "Noise errors that are not Pauli channels (thermal relaxation, in Kraus form or as a "
                    "mixture with a reset) were replaced by their Pauli twirl for the stabilizer method."
                ),
                "errors_twirled": len(self.twirled),
                "largest_error_distance": round(self.twirled[worst], 6),
                "largest_error": {"instruction": worst[0], "qubits": list(worst[1])},
                "expectation_value_bound": round(self.bound, 6),
            }
        return out

    def log_lines(self) -> list[str]:
        """Job-log lines stating each approximation (none when the simulation was exact)."""
        if not self.twirled:
            return []
        worst = max(self.twirled, key=self.twirled.__getitem__)
        return [
            f"Simulated with the stabilizer method: {len(self.twirled)} noise errors that are not Pauli channels "
            f"(thermal relaxation) were replaced by their Pauli twirl; the largest distance (Choi trace norm) is "
            f"{self.twirled[worst]:.3g}, on {worst[0]} {list(worst[1])}; any expectation value of norm 1 moves "
            f"by at most {self.bound:.3g} from the full-noise value."
        ]
