"""The worker's ISA check gives the client's verdict and IBM's message (``is_isa_circuit``)."""

from __future__ import annotations

import math

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import BoxOp, Parameter
from qiskit_ibm_runtime.utils.utils import is_isa_circuit

from qiskit_runtime_server.worker.errors import ProgramError
from qiskit_runtime_server.worker.programs.isa_check import backend_target, check_isa, isa_violation


def _circuit(build, qubits: int = 3, clbits: int = 1) -> QuantumCircuit:  # type: ignore[no-untyped-def]
    qc = QuantumCircuit(qubits, clbits)
    build(qc)
    return qc


def _if_with_h(qc: QuantumCircuit) -> None:
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.h(1)


CASES = [
    ("fake_sherbrooke", lambda qc: qc.h(0), "The instruction h on qubits (0,)"),
    ("fake_sherbrooke", lambda qc: qc.ecr(0, 2), "The instruction ecr on qubits (0, 2)"),
    ("fake_sherbrooke", lambda qc: qc.ecr(0, 1), "The instruction ecr on qubits (0, 1)"),  # wrong direction
    ("fake_sherbrooke", lambda qc: (qc.ecr(1, 0), qc.barrier(), qc.rz(0.3, 2), qc.measure(2, 0)), ""),
    ("fake_sherbrooke", _if_with_h, "The instruction h on qubits (1,)"),
    ("fake_manila", lambda qc: qc.cx(0, 2), "The instruction cx on qubits (0, 2)"),
    ("fake_fractional", lambda qc: qc.rzz(2.0, 0, 1), "supported only for angles in the range [0, pi/2]"),
    ("fake_fractional", lambda qc: qc.rzz(math.pi / 2, 0, 1), ""),
    ("fake_fractional", lambda qc: qc.rzz(Parameter("a"), 0, 1), ""),
    # A Heron's target has the fractional gates IBM offers on it (shared/fractional.py).
    ("fake_torino", lambda qc: (qc.rzz(0.3, 0, 1), qc.rx(0.3, 2), qc.measure(2, 0)), ""),
    ("fake_torino", lambda qc: qc.rzz(0.3, 0, 2), "The instruction rzz on qubits (0, 2)"),
    ("fake_torino", lambda qc: qc.rzz(2.0, 0, 1), "supported only for angles in the range [0, pi/2]"),
    ("fake_miami", lambda qc: (qc.rzz(math.pi / 2, 1, 0), qc.rx(-1.0, 0)), ""),
    ("fake_sherbrooke", lambda qc: qc.rx(0.3, 0), "The instruction rx on qubits (0,)"),
]


@pytest.mark.parametrize(("backend", "build", "expected"), CASES)
def test_verdict_and_message_match_the_client(backend: str, build, expected: str) -> None:  # type: ignore[no-untyped-def]
    circuit = _circuit(build)
    target = backend_target(backend)
    mine, clients = isa_violation(circuit, target), is_isa_circuit(circuit, target)
    assert mine == clients
    assert (expected in mine) if expected else mine == ""


def test_wider_than_the_target() -> None:
    assert isa_violation(QuantumCircuit(6), backend_target("fake_manila")) == (
        "The circuit has 6 qubits but the target system requires 5 qubits."
    )


def test_box_is_checked_through_its_body() -> None:
    target = backend_target("fake_manila")
    body = QuantumCircuit(2)
    body.sx(0)
    body.cx(0, 1)
    qc = QuantumCircuit(5)
    qc.append(BoxOp(body), [3, 4])
    assert isa_violation(qc, target) == ""  # no target lists "box"; what it holds is ISA
    body.h(1)
    qc = QuantumCircuit(5)
    qc.append(BoxOp(body), [3, 4])
    assert isa_violation(qc, target) == "The instruction h on qubits (4,) is not supported by the target system."


def test_check_isa_fails_the_job_with_ibm_advice() -> None:
    with pytest.raises(ProgramError) as info:
        check_isa(_circuit(lambda qc: qc.h(0)), "fake_sherbrooke", "PUB 2")
    message = str(info.value)
    assert message.startswith("PUB 2: The instruction h on qubits (0,) is not supported by the target system.")
    assert "Circuits that do not match the target hardware definition" in message
