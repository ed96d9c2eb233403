"""Keep the client-version matrix out of a plain ``python -m pytest``.

The matrix builds twelve venvs (minutes on the first run) and needs proxy mode for 0.40-0.48, so
it runs only when asked for: ``-m clients`` (any marker expression naming ``clients``), or a
path inside ``tests/clients`` on the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _asked_for(config: pytest.Config) -> bool:
    """True when the marker expression names ``clients`` or an argument points into this folder."""
    if "clients" in (config.option.markexpr or ""):
        return True
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect this folder's tests unless the run asked for them."""
    if _asked_for(config):
        return
    mine = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if item not in mine]
