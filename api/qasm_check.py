"""A light check of OpenQASM 3 circuits in PUBs at submission, without qiskit (docs/qrmi.md).

IBM refuses an invalid PUB with 400 when the job is submitted. The API process does not import
qiskit (nor the OpenQASM 3 parser), so it checks only what a plain scan can: the text is not empty,
a version statement, if any, says 3, and brackets and braces are balanced outside comments and
strings. Whatever else is wrong is found by the worker, which parses the text with
``qiskit.qasm3.loads`` and fails the job with the PUB, the line and the parser's message
(worker/programs/qasm_input.py).
"""

from __future__ import annotations

import re

from qiskit_runtime_server.shared.errors import InvalidRequest

_VERSION = re.compile(r"OPENQASM\s+([0-9]+)(?:\.[0-9]+)?\s*;")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def _code_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of ``text`` with comments and string literals blanked out."""
    out: list[tuple[int, str]] = []
    in_block = False
    for number, line in enumerate(text.splitlines(), start=1):
        kept = []
        i = 0
        while i < len(line):
            if in_block:
                end = line.find("*/", i)
                if end < 0:
                    break
                in_block, i = False, end + 2
                continue
            char = line[i]
            if line.startswith("//", i):
                break
            if line.startswith("/*", i):
                in_block, i = True, i + 2
                continue
            if char in "\"'":
                end = line.find(char, i + 1)
                i = len(line) if end < 0 else end + 1
                kept.append(" ")
                continue
            kept.append(char)
            i += 1
        out.append((number, "".join(kept)))
    return out


def check_qasm_text(text: str, where: str) -> None:
    """Refuse an OpenQASM string that cannot be an OpenQASM 3 program.

    Raises:
        InvalidRequest: empty, another OpenQASM version, or unbalanced brackets; the message
            names ``where`` (``PUB 0``) and the line (400, IBM's error format).
    """
    lines = _code_lines(text)
    if not any(code.strip() for _, code in lines):
        raise InvalidRequest(f"{where}: the OpenQASM 3 circuit is empty.")
    for number, code in lines:
        if not code.strip():
            continue
        match = _VERSION.match(code.strip())
        if match and match.group(1) != "3":
            raise InvalidRequest(
                f"{where}: line {number}: OpenQASM {match.group(1)} is not accepted; "
                "a circuit must be QPY or OpenQASM 3."
            )
        break
    stack: list[tuple[str, int]] = []
    for number, code in lines:
        for char in code:
            if char in "([{":
                stack.append((char, number))
            elif char in _PAIRS:
                if not stack or stack[-1][0] != _PAIRS[char]:
                    raise InvalidRequest(
                        f"{where}: the OpenQASM 3 circuit could not be parsed: line {number}: unmatched {char!r}."
                    )
                stack.pop()
    if stack:
        char, number = stack[-1]
        raise InvalidRequest(
            f"{where}: the OpenQASM 3 circuit could not be parsed: line {number}: {char!r} is never closed."
        )
