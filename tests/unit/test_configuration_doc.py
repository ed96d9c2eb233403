"""docs/configuration.md is generated from shared/settings.py and must match it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qiskit_runtime_server.shared import settings_doc
from qiskit_runtime_server.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_is_current() -> None:
    committed = (ROOT / settings_doc.DOC_PATH).read_text(encoding="utf-8")
    assert committed == settings_doc.render(), (
        f"{settings_doc.DOC_PATH} differs from shared/settings.py; regenerate it from the repository root with "
        f"`{settings_doc.REGENERATE}` and commit the result."
    )


def test_every_setting_is_documented_once() -> None:
    docs = settings_doc.fields()
    assert [d.field for d in docs] == list(Settings.__struct_fields__)
    assert {d.env for d in docs} >= {"REDIS_URL", "QRS_PORT", "QRS_MAX_SHOTS"}
    assert all(d.doc and d.section for d in docs)
    body = next(d for d in docs if d.env == "QRS_MAX_PARAMS_BYTES")
    assert (body.type, body.default) == ("integer", str(64 * 1024 * 1024))
    assert next(d for d in docs if d.env == "REDIS_URL").default == "unset"


def test_undocumented_setting_is_refused() -> None:
    source = Path(settings_doc.settings_module.__file__).read_text(encoding="utf-8")
    bare = source.replace("    # Log level.\n", "")
    with pytest.raises(ValueError, match="QRS_LOG_LEVEL"):
        settings_doc.fields(bare)


def test_write(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    assert settings_doc.main(["--write", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == settings_doc.render()


def test_write_with_env_example_writes_both(tmp_path: Path) -> None:
    """The README's regeneration command passes both flags: each file is written."""
    page, variables = tmp_path / "configuration.md", tmp_path / ".env.example"
    assert settings_doc.main(["--write", str(page), "--env-example", str(variables)]) == 0
    assert page.read_text(encoding="utf-8") == settings_doc.render()
    assert variables.read_text(encoding="utf-8").strip()
