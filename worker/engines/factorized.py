"""Sample a circuit group by group: lone qubits exactly with numpy, the other groups on Aer.

The groups of :func:`~worker.engines.partition.independent_components` never interact, so a
shot of the whole circuit is one shot of each group side by side: concatenating independent
per-group samples has the same law as sampling the whole circuit. Groups whose classical bits
are in no register (nothing the result can show) are not simulated at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from qiskit.circuit import Parameter, QuantumCircuit

from qiskit_runtime_server.worker.engines.compaction import active_qubits
from qiskit_runtime_server.worker.engines.partition import Component, independent_components
from qiskit_runtime_server.worker.engines.single_qubit import (
    NoiseChannels,
    compile_single_qubit,
    instructions_by_qubit,
)

# run_group(circuit, group, values, columns, shots, seed) -> bits (bindings, shots, len(group.clbits))
GroupRunner = Callable[[QuantumCircuit, Component, np.ndarray, Mapping[Parameter, int], int, int], np.ndarray]


def whole_circuit(circuit: QuantumCircuit) -> Component:
    """All active qubits and every classical bit as one group (no factorization)."""
    return Component(tuple(sorted(active_qubits(circuit))), tuple(range(circuit.num_clbits)), True)


def sample_bits(
    circuit: QuantumCircuit,
    values: np.ndarray,
    shots: int,
    noise: NoiseChannels,
    run_group: GroupRunner,
    rng: np.random.Generator,
    *,
    factorize: bool,
) -> np.ndarray:
    """Measured bits ``(bindings, shots, circuit.num_clbits)`` of ``circuit``.

    ``values`` holds one row of parameter values per binding, columns in ``circuit.parameters``
    order (``(bindings, 0)`` without parameters). With ``factorize`` (the noise is local, see
    :func:`~worker.engines.partition.noise_is_local`) independent groups run separately;
    otherwise the circuit runs as one group. ``rng`` draws the lone qubits' outcomes and the
    seed of each Aer run, so a seeded ``rng`` makes the whole sample reproducible.
    """
    bindings = values.shape[0]
    columns = {parameter: i for i, parameter in enumerate(circuit.parameters)}
    bits = np.zeros((bindings, shots, circuit.num_clbits), dtype=bool)
    observed = {circuit.find_bit(bit).index for register in circuit.cregs for bit in register}
    found = independent_components(circuit) if factorize else None
    groups = [group for group in found or [whole_circuit(circuit)] if observed.intersection(group.clbits)]
    lone = {group.qubits[0] for group in groups if len(group.qubits) == 1 and not group.control_flow}
    by_qubit = instructions_by_qubit(circuit, lone) if lone else {}
    for group in groups:
        if group.qubits[0] in lone:
            qubit = group.qubits[0]
            program = compile_single_qubit(circuit, qubit, by_qubit[qubit], noise, values, columns)
            if program is not None:
                recorded = program.sample(shots, rng)
                for event, clbit in enumerate(program.clbits):  # a later measurement overwrites
                    bits[:, :, clbit] = recorded[:, :, event]
                continue
        seed = int(rng.integers(2**31 - 1))
        bits[:, :, list(group.clbits)] = run_group(circuit, group, values, columns, shots, seed)
    return bits
