"""Code shared by the API and the workers: settings, models, Redis keys and the job store.

Nothing in this package imports qiskit, so the API stays small and starts fast.
"""
