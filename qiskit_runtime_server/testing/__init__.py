"""Helpers for testing clients against the server (fault injection: ``faults``)."""
