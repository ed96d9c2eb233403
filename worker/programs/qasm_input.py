"""OpenQASM 3 circuits in sampler and estimator PUBs (docs/compatibility.md, docs/qrmi.md).

IBM's runtime API takes a PUB's circuit as QPY (what qiskit-ibm-runtime sends) or as an OpenQASM 3
string (what raw REST callers and QRMI users send, e.g. the output of ``qiskit.qasm3.dumps``).
:func:`circuits_from_qasm` replaces every such string by the ``QuantumCircuit`` that
``qiskit.qasm3.loads`` builds, right after the params are decoded, so the rest of the worker (the
GPU classification, the ISA check, the simulation) sees QPY and OpenQASM 3 circuits alike.

``qasm3.dumps`` writes gates outside ``stdgates.inc`` (``ecr``, ``rzz``, ...) as ``gate``
definitions, which ``loads`` turns into custom gates; a custom gate that carries the name and the
shape of one of qiskit's standard gates is replaced by that gate, so the backend's noise model and
basis apply to it as to the QPY circuit. Executor programs are not concerned: their schema
(ibm-quantum-schemas) carries circuits as QPY only.
"""

from __future__ import annotations

from typing import Any

from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import CircuitInstruction, Gate
from qiskit.circuit.library import get_standard_gate_name_mapping

from qiskit_runtime_server.worker.errors import ProgramError

QASM_PROGRAMS = frozenset({"sampler", "estimator"})


def _error_position(exc: BaseException) -> str:
    """``line L, column C: syntax error at 'x'`` for a parser error, from the token ANTLR stopped
    at; ``"syntax error"`` when it names no place."""
    seen: BaseException | None = exc
    while seen is not None:
        for candidate in (seen, *seen.args):
            token = getattr(candidate, "offendingToken", None)
            if token is not None and getattr(token, "line", None) is not None:
                text = getattr(token, "text", None)
                at = f" at {text!r}" if text and text != "<EOF>" else " at the end of the program"
                return f"line {token.line}, column {token.column}: syntax error{at}"
        seen = seen.__cause__ or seen.__context__
    return "syntax error"


def _parse_message(exc: BaseException) -> str:
    """The text of a ``qasm3.loads`` failure: the importer says ``"6,0: gate 'x' is not
    defined."``, the parser gives no text but the offending token."""
    text = str(exc).strip().strip('"')
    head, sep, rest = text.partition(": ")
    line, comma, column = head.partition(",")
    if sep and comma and line.isdigit() and column.isdigit():
        return f"line {line}, column {column}: {rest}"
    return text or _error_position(exc)


def _standard_gates(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with custom gates named and shaped like a qiskit standard gate replaced by it."""
    mapping = get_standard_gate_name_mapping()
    changed = False
    data = []
    for instruction in circuit.data:
        operation = instruction.operation
        standard = mapping.get(operation.name)
        if (
            isinstance(operation, Gate)
            and standard is not None
            and type(operation) is not type(standard)
            and isinstance(standard, Gate)
            and standard.num_qubits == operation.num_qubits
            and len(standard.params) == len(operation.params)
        ):
            try:
                operation = type(standard)(*operation.params)
            except (TypeError, ValueError):
                pass
            else:
                changed = True
        data.append(CircuitInstruction(operation, instruction.qubits, instruction.clbits))
    if not changed:
        return circuit
    rebuilt = circuit.copy_empty_like()
    for instruction in data:
        rebuilt.append(instruction)
    return rebuilt


def circuit_from_qasm(text: str, where: str) -> QuantumCircuit:
    """The circuit of OpenQASM 3 program ``text``.

    Raises:
        ProgramError: the program does not parse; the message names ``where`` (``PUB 0``), the
            line and the column.
    """
    try:
        circuit = qasm3.loads(text)
    except Exception as exc:  # the parser and the importer raise several types
        raise ProgramError(f"{where}: the OpenQASM 3 circuit could not be parsed: {_parse_message(exc)}") from None
    return _standard_gates(circuit)


def circuits_from_qasm(program_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every OpenQASM 3 string in a PUB's circuit position parsed (in place).

    Raises:
        ProgramError: a string that does not parse, naming its PUB and line.
    """
    if program_id not in QASM_PROGRAMS:
        return params
    pubs = params.get("pubs")
    if not isinstance(pubs, list):
        return params
    for index, pub in enumerate(pubs):
        if isinstance(pub, str):
            pubs[index] = [circuit_from_qasm(pub, f"PUB {index}")]
        elif isinstance(pub, list | tuple) and pub and isinstance(pub[0], str):
            pubs[index] = [circuit_from_qasm(pub[0], f"PUB {index}"), *pub[1:]]
    return params
