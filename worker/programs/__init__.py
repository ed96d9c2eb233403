"""Runtime programs: decode ``params``, build the work, run it on a simulation engine, encode the result.

``sampler`` and ``estimator`` are the V2 primitives' programs (docs/protocol.md §5.2).
"""
