"""Generate ``docs/configuration.md`` from :class:`~qiskit_runtime_server.shared.settings.Settings`.

Each field of ``Settings`` is one environment variable. Its documentation is the block of
``#`` comments right above it in ``shared/settings.py``; a ``# == Title ==`` comment starts a
section. Names come from the struct's ``rename`` rule, defaults from the struct itself and types
from the annotations, so the page cannot drift from the code.

Regenerate the page from the repository root::

    python -m qiskit_runtime_server.shared.settings_doc --write

Without ``--write`` the page is printed. ``tests/unit/test_configuration_doc.py`` fails while
the committed page differs from what this prints.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import msgspec

from qiskit_runtime_server.shared import settings as settings_module
from qiskit_runtime_server.shared.settings import Settings

#: Where the page lives, relative to the repository root.
DOC_PATH = Path("docs") / "configuration.md"
REGENERATE = "python -m qiskit_runtime_server.shared.settings_doc --write"

_SECTION = re.compile(r"^#\s*==\s*(.+?)\s*==\s*$")
_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}


@dataclass(frozen=True)
class FieldDoc:
    """One setting: its section, field and variable names, type, default and description."""

    section: str
    field: str
    env: str
    type: str
    default: str
    doc: str


def _type_name(annotation: ast.expr) -> str:
    parts = [part.strip() for part in ast.unparse(annotation).split("|")]
    names = [_TYPES.get(part, part) for part in parts if part != "None"]
    return " or ".join(names)


def _default_text(value: object) -> str:
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _markdown(text: str) -> str:
    """The comment's reST-style ``literals`` as Markdown code, table pipes escaped."""
    return text.replace("``", "`").replace("|", "\\|")


def fields(source: str | None = None) -> list[FieldDoc]:
    """Every ``Settings`` field in source order, with the comment block above it.

    Raises:
        ValueError: a field has no comment above it (every variable must be documented).
    """
    if source is None:
        source = inspect.getsource(settings_module)
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings")
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    by_name = {f.name: f for f in info.fields}
    comments = {number for number, line in enumerate(lines, start=1) if line.strip().startswith("#")}

    result: list[FieldDoc] = []
    section = ""
    previous_end = cls.lineno
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            previous_end = node.end_lineno or node.lineno
            continue
        name = node.target.id
        # Sections: any "# == Title ==" line between the previous field and this one.
        for number in range(previous_end + 1, node.lineno):
            match = _SECTION.match(lines[number - 1].strip())
            if match:
                section = match.group(1)
        # The field's documentation: the contiguous comment lines right above it.
        block: list[str] = []
        number = node.lineno - 1
        while number in comments and not _SECTION.match(lines[number - 1].strip()):
            block.insert(0, lines[number - 1].strip().lstrip("#").strip())
            number -= 1
        if not block:
            raise ValueError(
                f"Settings.{name} ({by_name[name].encode_name}) has no comment above it in shared/settings.py; "
                "document it there (the comment becomes its entry in docs/configuration.md)."
            )
        field = by_name[name]
        default = field.default if field.default is not msgspec.NODEFAULT else None
        result.append(
            FieldDoc(
                section=section,
                field=name,
                env=field.encode_name,
                type=_type_name(node.annotation),
                default=_default_text(default),
                doc=" ".join(block),
            )
        )
        previous_end = node.end_lineno or node.lineno
    return result


def render(source: str | None = None) -> str:
    """The text of ``docs/configuration.md``."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated from shared/settings.py; do not edit. Regenerate with:",
        f"     {REGENERATE} -->",
        "",
        "Every setting is an environment variable, and all are optional. `REDIS_URL` keeps its",
        "conventional name; the others start with `QRS_`. A wrong value stops the server at start-up",
        "with the variable's name in the message. API and workers read the same variables; each uses",
        "the ones that concern it. What a client gets past each limit is in [limits.md](limits.md).",
        "",
        "Compose passes them through from the shell or an `.env` file, and also reads `QRS_API_PORT`",
        "(host port of the API, default 8000), `REDIS_MAXMEMORY` (default `2gb`) and",
        "`QRS_CLIENT_VERSION` (the client release both images carry) ([deployment](deployment.md)).",
    ]
    section = None
    for doc in fields(source):
        if doc.section != section:
            section = doc.section
            out += ["", f"## {section}", "", "| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        default = doc.default if doc.default in ("unset", "empty") else f"`{_markdown(doc.default)}`"
        out.append(f"| `{doc.env}` | {doc.type} | {default} | {_markdown(doc.doc)} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--write",
        nargs="?",
        const=str(DOC_PATH),
        metavar="PATH",
        help=f"write the page (default {DOC_PATH}, relative to the current directory) instead of printing it",
    )
    args = parser.parse_args(argv)
    text = render()
    if args.write is None:
        sys.stdout.write(text)
    else:
        Path(args.write).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
