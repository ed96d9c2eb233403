"""The engine seam: where PUBs meet a simulator. ``aer.py`` runs them on qiskit-aer (CPU/GPU)."""
