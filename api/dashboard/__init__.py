"""The operator's dashboard: the page at ``/dashboard``, its analytics API under ``/dashboard/api``
and the live feed at ``/dashboard/ws`` (docs/dashboard.md)."""
