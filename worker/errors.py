"""Errors raised while running a program; picklable so they cross the child-process pipe."""

from __future__ import annotations


class ProgramError(Exception):
    """The job's input cannot run (bad PUB, circuit wider than the backend...): fails the job.

    The message becomes the job's ``state.reason`` and the text of ``GET /jobs/{id}/results``.
    Never retried: the same input fails the same way.
    """
