"""Errors raised while running a program; picklable so they cross the child-process pipe."""

from __future__ import annotations

import re

# ANSI escape sequences (colours, cursor moves) that some libraries put in exception text.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Rust panics (qiskit's accelerate crate) append a backtrace and a hint about RUST_BACKTRACE.
_RUST_BACKTRACE = re.compile(r"(?ms)^\s*stack backtrace:.*\Z")
_RUST_HINT = re.compile(r"(?m)^note: run with `RUST_BACKTRACE=.*$\n?")
MAX_REASON_CHARS = 2000


def plain_text(message: str, limit: int = MAX_REASON_CHARS) -> str:
    """``message`` fit for a job's ``reason`` and log: no ANSI codes, no Rust backtrace, at most ``limit`` chars."""
    text = _ANSI.sub("", message)
    text = _RUST_HINT.sub("", _RUST_BACKTRACE.sub("", text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ProgramError(Exception):
    """The job's input cannot run (bad PUB, circuit wider than the backend...): fails the job.

    The message becomes the job's ``state.reason`` and the text of ``GET /jobs/{id}/results``.
    Never retried: the same input fails the same way.
    """
