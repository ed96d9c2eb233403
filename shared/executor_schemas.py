"""The ``executor`` program's schema versions this server decodes (no qiskit imports: used by the API)."""

from __future__ import annotations

# Client 0.47 sends v1.0, 0.48 sends v1.1, 0.49+ send v2.0 (docs/protocol.md §5.3). The v0.x schemas
# predate ``semantic_role`` and no supported client sends them.
EXECUTOR_SCHEMA_VERSIONS: tuple[str, ...] = ("v1.0", "v1.1", "v2.0")
