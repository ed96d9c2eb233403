"""arq worker: runs Qiskit Runtime programs (sampler, estimator) on qiskit-aer.

The arq task (``worker/tasks.py``) runs in the worker's event loop and never imports qiskit;
the simulation happens in a child process (``worker/runner.py``) so that it can be killed on
cancel or time-out without taking the worker down.
"""
