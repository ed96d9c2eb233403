"""``python -m qiskit_runtime_server``: the same as the ``qiskit-runtime-server`` console script."""

from qiskit_runtime_server.cli import main

main()
