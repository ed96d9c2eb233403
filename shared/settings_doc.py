"""Generate ``docs/configuration.md`` from :class:`~qiskit_runtime_server.shared.settings.Settings`.

Each field of ``Settings`` is one environment variable. Its documentation is the block of
``#`` comments right above it in ``shared/settings.py``; a ``# == Title ==`` comment starts a
section. Names come from the struct's ``rename`` rule, defaults from the struct itself and types
from the annotations, so the page cannot drift from the code.

Regenerate the page from the repository root::

    python -m qiskit_runtime_server.shared.settings_doc --write

Without ``--write`` the page is printed. ``tests/unit/test_configuration_doc.py`` fails while
the committed page differs from what this prints.

``--env-example`` writes ``.env.example`` instead: every variable of ``docker-compose.yml`` (the
settings and the compose file's own), each with its documentation and the value the stack uses
when it is left out, read from the compose file; ``tests/unit/test_deployment_files.py`` checks
it is current.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import msgspec

from qiskit_runtime_server.shared import settings as settings_module
from qiskit_runtime_server.shared.settings import Settings

#: Where the page lives, relative to the repository root.
DOC_PATH = Path("docs") / "configuration.md"
REGENERATE = "python -m qiskit_runtime_server.shared.settings_doc --write"
#: The compose stack's variables file and the compose file it is read from.
ENV_EXAMPLE_PATH = Path(".env.example")
COMPOSE_PATH = Path("docker-compose.yml")
REGENERATE_ENV = "python -m qiskit_runtime_server.shared.settings_doc --env-example"
#: Settings ``docker-compose.yml`` sets itself (or that do not apply there), with why.
COMPOSE_FIXED = {
    "QRS_HOST": "0.0.0.0 in the API container; the host side is QRS_PUBLISH_ADDRESS",
    "QRS_PORT": "8000 in the API container; the host side is QRS_API_PORT",
    "QRS_DEVICE": "per service: CPU for worker, GPU for worker-gpu0 and worker-gpu1",
    "QRS_WORKER_ID": "per GPU service; a scaled CPU worker names itself",
    "QRS_WORKERS": "the all-in-one server's only; compose runs one worker per container",
}
#: Variables of ``docker-compose.yml`` itself (not server settings), in the order listed.
COMPOSE_VARIABLES = {
    "QRS_PUBLISH_ADDRESS": "Host address the API's port is published on: 127.0.0.1, this machine only, or 0.0.0.0 "
    "for every interface (then add the names clients use to QRS_ALLOWED_HOSTS and turn access control on, "
    "docs/security.md).",
    "QRS_API_PORT": "Host port of the API.",
    "QRS_API_MEMORY": "Memory limit of the API container.",
    "QRS_WORKER_MEMORY": "Memory limit of each worker container: at least QRS_JOB_MEMORY_LIMIT plus 1 GiB (the "
    "worker and its simulation process); a worker warns at start-up when it is less. Raise both together.",
    "REDIS_MAXMEMORY": "Redis's memory bound; when it is full only finished jobs (keys with a time to live) are "
    "evicted.",
    "QRS_CLIENT_VERSION": "The qiskit-ibm-runtime release both images carry (build time; within pyproject.toml's "
    "range).",
}
_COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?-([^}]*))?\}")

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
        "Compose passes every one through from the shell or an `.env` file (`.env.example` lists them",
        "with the stack's defaults), and also reads `QRS_PUBLISH_ADDRESS` (default `127.0.0.1`),",
        "`QRS_API_PORT` (default 8000), `QRS_API_MEMORY`, `QRS_WORKER_MEMORY` (container memory",
        "limits), `REDIS_MAXMEMORY` and `QRS_CLIENT_VERSION` ([deployment](deployment.md#compose)).",
    ]
    section = None
    for doc in fields(source):
        if doc.section != section:
            section = doc.section
            out += ["", f"## {section}", "", "| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        default = doc.default if doc.default in ("unset", "empty") else f"`{_markdown(doc.default)}`"
        out.append(f"| `{doc.env}` | {doc.type} | {default} | {_markdown(doc.doc)} |")
    return "\n".join(out) + "\n"


def compose_defaults(compose: str) -> dict[str, str]:
    """Every ``${VAR:-default}`` (or ``${VAR-default}``) of a compose file: name to default."""
    return {m.group(1): m.group(2) or "" for m in _COMPOSE_VARIABLE.finditer(compose)}


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text.replace("``", "`"), width=100, initial_indent="# ", subsequent_indent="# ")


def render_env_example(compose: str) -> str:
    """The text of ``.env.example`` for the compose file whose text is ``compose``.

    Each variable is a commented-out line with the value the stack uses when it is left out:
    the compose file's default, else the server's own (empty where the server's is unset).
    """
    defaults = compose_defaults(compose)
    out = [
        "# Variables of the Docker Compose stack (docker-compose.yml). Copy this file to .env next to it",
        "# and uncomment what you change. Each line holds the value used when it is left out.",
        "# docs/deployment.md (Compose) and docs/configuration.md explain them.",
        "# Generated from shared/settings.py and docker-compose.yml; do not edit. Regenerate with:",
        f"#   {REGENERATE_ENV}",
        "",
        "# == Compose ==",
    ]
    for name, text in COMPOSE_VARIABLES.items():
        out += ["", *_comment(text), f"#{name}={defaults.get(name, '')}"]
    section = None
    for doc in fields():
        if doc.env in COMPOSE_FIXED:
            continue
        if doc.section != section:
            section = doc.section
            out += ["", f"# == {section} =="]
        value = defaults.get(doc.env) or ("" if doc.default in ("unset", "empty") else doc.default)
        out += ["", *_comment(doc.doc), f"#{doc.env}={value}"]
    out += ["", "# == Set by docker-compose.yml ==", ""]
    out += [f"# {name}: {why}." for name, why in COMPOSE_FIXED.items()]
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
    parser.add_argument(
        "--env-example",
        nargs="?",
        const=str(ENV_EXAMPLE_PATH),
        metavar="PATH",
        help=f"write the compose variables file (default {ENV_EXAMPLE_PATH}) from {COMPOSE_PATH} (with --write: both)",
    )
    args = parser.parse_args(argv)
    if args.env_example is not None:
        text = render_env_example(COMPOSE_PATH.read_text(encoding="utf-8"))
        Path(args.env_example).write_text(text, encoding="utf-8")
        if args.write is None:
            return 0  # only the variables file was asked for
    text = render()
    if args.write is None:
        sys.stdout.write(text)
    else:
        Path(args.write).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
