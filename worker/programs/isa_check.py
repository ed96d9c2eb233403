"""IBM's ISA check, on the worker: a circuit may use only what the backend's ``Target`` supports.

IBM refuses a PUB whose circuit is not ISA for the device (an instruction outside the target's
basis, or a two-qubit gate on a pair the coupling map lacks) and the client checks the same
before submitting (``qiskit_ibm_runtime.utils.utils.is_isa_circuit``, called from
``BasePrimitiveV2._run``). Any other HTTP caller, and the executor primitives (which do not
check), reach the server with such circuits, so the worker checks every decoded circuit here
before anything is simulated and fails the job at once with IBM's message and code 1517.

The rules are the client's: every instruction must be ``target.instruction_supported(name,
physical qubits)`` except ``barrier`` and ``store``; ``rzz`` angles must lie in ``[0, pi/2]``;
control-flow blocks are checked with their qubits mapped to the outer ones. One addition for
the executor's ``QuantumProgram`` items: a ``box`` (samplex annotations) is checked through its
body, as IBM runs it, rather than as an instruction of its own (no target lists ``box``).
"""

from __future__ import annotations

import math
from functools import cache

from qiskit import QuantumCircuit
from qiskit.circuit import CONTROL_FLOW_OP_NAMES, ControlFlowOp, ParameterExpression, Qubit
from qiskit.converters import circuit_to_dag
from qiskit.transpiler import Target
from qiskit.transpiler.passes import GatesInBasis

from qiskit_runtime_server.worker.errors import ProgramError

# Instructions every target accepts (the client's exemptions).
_ALWAYS_ALLOWED = frozenset({"barrier", "store"})
# The client's tolerance on the rzz angle bound (floating-point rounding).
_RZZ_TOLERANCE = 1e-10
# The advice IBM appends to a non-ISA refusal (the client's ``validate_isa_circuits`` text).
ISA_ADVICE = (
    "Circuits that do not match the target hardware definition are no longer supported after "
    "March 4, 2024. See the transpilation documentation "
    "(https://quantum.cloud.ibm.com/docs/guides/transpile) for instructions to transform circuits "
    "and the primitive examples (https://quantum.cloud.ibm.com/docs/guides/primitives-examples) "
    "to see this coupled with operator transformations."
)


@cache
def backend_target(backend_name: str) -> Target:
    """The ``Target`` of the client's fake backend ``backend_name`` (a ``fake_*`` name), cached.

    Raises:
        ProgramError: no such fake backend on this worker.
    """
    from qiskit_runtime_server.worker.engines.aer import fake_backend

    return fake_backend(backend_name).target


def isa_violation(circuit: QuantumCircuit, target: Target) -> str:
    """Why ``circuit`` is not ISA for ``target``, in IBM's words; ``""`` when it is.

    E.g. ``"The instruction h on qubits (0,) is not supported by the target system."``.
    """
    if circuit.num_qubits > target.num_qubits:
        return f"The circuit has {circuit.num_qubits} qubits but the target system requires {target.num_qubits} qubits."
    if _plainly_isa(circuit, target):
        return ""
    qubit_map = {qubit: index for index, qubit in enumerate(circuit.qubits)}
    return _violation(circuit, target, qubit_map, set())


def _plainly_isa(circuit: QuantumCircuit, target: Target) -> bool:
    """Whether a circuit without control flow or ``rzz`` passes Qiskit's ``GatesInBasis`` (Rust).

    The fast path for the common, valid case: 0.08 s instead of 0.9 s for a 127-qubit circuit of
    269,000 instructions. ``False`` sends the circuit to the instruction walk, which finds the
    reason (or accepts what ``GatesInBasis`` does not know, like ``store``).
    """
    names = circuit.count_ops()
    if "rzz" in names or any(name in CONTROL_FLOW_OP_NAMES for name in names):
        return False
    check = GatesInBasis(target=target)
    check.run(circuit_to_dag(circuit, copy_operations=False))
    return bool(check.property_set["all_gates_in_basis"])


def _violation(
    circuit: QuantumCircuit, target: Target, qubit_map: dict[Qubit, int], supported: set[tuple[str, tuple[int, ...]]]
) -> str:
    """The first violation in ``circuit``; ``supported`` memoizes the (name, qubits) already
    accepted, since ``Target.instruction_supported`` dominates the cost of a large circuit."""
    for instruction in circuit.data:
        operation = instruction.operation
        name = operation.name
        qargs = tuple(qubit_map[bit] for bit in instruction.qubits)
        if isinstance(operation, ControlFlowOp):
            # A box is transparent (its body runs); other control flow must be in the target.
            if name != "box" and not target.instruction_supported(name, qargs):
                return f"The instruction {name} on qubits {qargs} is not supported by the target system."
            for block in operation.blocks:
                inner = {inner: qubit_map[outer] for outer, inner in zip(instruction.qubits, block.qubits, strict=True)}
                if reason := _violation(block, target, inner, supported):
                    return reason
            continue
        if name not in _ALWAYS_ALLOWED and (name, qargs) not in supported:
            if not target.instruction_supported(name, qargs):
                return f"The instruction {name} on qubits {qargs} is not supported by the target system."
            supported.add((name, qargs))
        if name == "rzz":
            angle = operation.params[0]
            if not isinstance(angle, ParameterExpression) and not 0.0 <= angle <= math.pi / 2 + _RZZ_TOLERANCE:
                return (
                    f"The instruction {name} on qubits {qargs} is supported only for angles in the "
                    f"range [0, pi/2], but an angle ({angle}) outside of this range has been requested."
                )
    return ""


def check_isa(circuit: QuantumCircuit, backend_name: str, where: str) -> None:
    """Fail the job unless ``circuit`` is ISA for ``backend_name`` (the device's ``fake_*`` name).

    ``where`` names the circuit in the message (``"PUB 0"``, ``"Item 2"``).

    Raises:
        ProgramError: ``"{where}: The instruction ... is not supported by the target system.
            Circuits that do not match ..."`` (the job fails with code 1517, not retried).
    """
    if reason := isa_violation(circuit, backend_target(backend_name)):
        raise ProgramError(f"{where}: {reason} {ISA_ADVICE}")
