"""qiskit-runtime-server: the IBM Quantum (Qiskit Runtime) REST API in front of qiskit-aer workers.

The import package maps the repository's top-level folders (see ``pyproject.toml``)::

    qiskit_runtime_server.api     <- api/     the Starlette API (never imports qiskit)
    qiskit_runtime_server.worker  <- worker/  arq worker and the simulation process
    qiskit_runtime_server.shared  <- shared/  storage, settings and models both use
    qiskit_runtime_server.cli               the ``qiskit-runtime-server`` console script
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qiskit-runtime-server")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
