"""Benchmarks: ``python -m bench`` runs every case against its baseline in the same run."""
