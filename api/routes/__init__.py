"""Thin request handlers, one module per resource of the runtime API (``/api/v1``)."""
