"""pytest plugin: test code that uses ``qiskit-ibm-runtime`` against this server (docs/testing.md).

Installed with the package (entry point ``pytest11``), it adds these fixtures:

``qiskit_runtime_server`` (session)
    The server: the all-in-one server started in this process (uvicorn on a free loopback
    port in a background thread with its own event loop, fakeredis, ``QRS_WORKERS=1`` unless
    set), or the one of ``--qrs-url``. ``.url``, ``.client_env()`` (the variables the server's
    start-up recipe prints), ``.reset()`` (``POST /admin/reset``).
``qrs_server`` (function)
    The server of this test, reset before it: the session's, or for a test marked
    ``@pytest.mark.qrs(env={...})`` one started with those settings (shared by the tests
    that ask for the same ones).
``runtime_service`` (function)
    A ``QiskitRuntimeService()`` connected to ``qrs_server``, configured by the recipe's
    environment variables (set for the test only).

Settings of the started server come from the ini option ``qrs_env`` (``NAME=VALUE`` lines) and
the marker, never from the environment of the test run. Under pytest-xdist every worker
process starts its own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

DEFAULT_TOKEN = "any-api-key"
START_TIMEOUT = 120.0
_REGISTRY = pytest.StashKey["ServerRegistry"]()

# Client variables removed for the test, so a developer's own account settings cannot leak in.
_CLIENT_VARIABLES = (
    "QISKIT_IBM_TOKEN",
    "QISKIT_IBM_URL",
    "QISKIT_IBM_INSTANCE",
    "QISKIT_IBM_CHANNEL",
    "QISKIT_FUNCTIONS_EXPERIMENTAL",
    "IAM_URL",
    "GLOBAL_SEARCH_URL",
    "GLOBAL_CATALOG_URL",
)
# Removed too for a server started here: it listens on loopback, never behind a proxy.
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class RuntimeServer:
    """A server the tests talk to: its base URL, the client's environment, and reset."""

    def __init__(self, url: str, *, token: str = DEFAULT_TOKEN, instance: str | None, admin_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.instance = instance
        self.admin_key = admin_key

    def client_env(self) -> dict[str, str]:
        """The variables of the server's recipe: an unmodified ``QiskitRuntimeService()`` connects with them."""
        env = {
            "QISKIT_IBM_TOKEN": self.token,
            "QISKIT_IBM_URL": f"{self.url}/experimental/api/v1",
            "IAM_URL": self.url,
            "GLOBAL_SEARCH_URL": f"{self.url}/search",
            "GLOBAL_CATALOG_URL": f"{self.url}/catalog",
        }
        if self.instance:
            env["QISKIT_IBM_INSTANCE"] = self.instance
        return env

    def reset(self) -> dict[str, Any]:
        """``POST /admin/reset``: no job, session or usage is left (docs/testing.md).

        Raises:
            RuntimeError: the server refused (``QRS_ALLOW_RESET`` off, no admin key) or is unreachable.
        """
        request = urllib.request.Request(f"{self.url}/admin/reset", method="POST", data=b"")
        if self.admin_key:
            request.add_header("Authorization", f"apikey {self.admin_key}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RuntimeError(
                f"POST {self.url}/admin/reset answered {exc.code}: {detail}\n"
                "Start the server with QRS_ALLOW_RESET=true (and pass --qrs-admin-key with access control on)."
            ) from None
        except OSError as exc:
            raise RuntimeError(f"POST {self.url}/admin/reset failed: {exc}") from None

    def close(self) -> None:
        """Nothing to stop for a server this plugin did not start."""


class EmbeddedServer(RuntimeServer):
    """The all-in-one server in a background thread: its own event loop, fakeredis, the API and
    its workers, uvicorn on a socket bound here (so the port is known before it starts)."""

    def __init__(self, env: Mapping[str, str], worker: str = "master") -> None:
        from qiskit_runtime_server.shared.settings import load_settings

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        port = int(self._socket.getsockname()[1])
        environ = {
            "QRS_WORKERS": "1",
            "QRS_ALLOW_RESET": "true",
            "QRS_WORKER_ID": f"pytest-{worker}",
            **env,
            "QRS_HOST": "127.0.0.1",
            "QRS_PORT": str(port),
        }
        environ.pop("REDIS_URL", None)
        self.settings = load_settings(environ)
        super().__init__(self.settings.base_url, instance=self.settings.instance, admin_key=_first_admin_key(environ))
        self._server: Any = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"qiskit-runtime-server {port}", daemon=True)

    def start(self) -> EmbeddedServer:
        """Start and wait until it answers.

        Raises:
            RuntimeError: it failed to start, or did not within ``START_TIMEOUT`` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError(f"qiskit-runtime-server did not start: {self._failure!r}")
            if self._server is not None and self._server.started:
                return self
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"qiskit-runtime-server did not start within {START_TIMEOUT} s")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(); the thread must not die silently
            self._failure = exc

    async def _main(self) -> None:
        import uvicorn

        from qiskit_runtime_server.api.app import create_app
        from qiskit_runtime_server.api.server import server_config
        from qiskit_runtime_server.shared.queue import connect
        from qiskit_runtime_server.worker.embedded import (
            embedded_workers,
            physical_memory_mb,
            plan_workers,
            usable_cores,
        )

        settings = self.settings
        plan = plan_workers(
            settings.workers, settings.job_memory_limit, cores=usable_cores(), memory_mb=physical_memory_mb()
        )

        @contextlib.asynccontextmanager
        async def with_workers(pool: Any) -> AsyncIterator[None]:
            async with embedded_workers(settings, pool, plan):
                yield

        pool = await connect(None)
        app = create_app(settings, pool, background=with_workers)
        self._server = uvicorn.Server(server_config(app, settings))
        await self._server.serve(sockets=[self._socket])

    def close(self) -> None:
        """Stop the server (a running job is handed back, as at any shutdown) and its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self._socket.close()


def _first_admin_key(environ: Mapping[str, str]) -> str | None:
    keys = [k.strip() for k in environ.get("QRS_ADMIN_KEYS", "").split(",") if k.strip()]
    return keys[0] if keys else None


def _parse_env(lines: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise pytest.UsageError(f"qrs_env: {line!r} is not NAME=VALUE")
        env[name.strip()] = value.strip()
    return env


class ServerRegistry:
    """The servers of this test session (one per settings), started on first use."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.url: str | None = config.getoption("qrs_url") or config.getini("qrs_url") or os.environ.get("QRS_TEST_URL")
        self.admin_key: str | None = config.getoption("qrs_admin_key") or os.environ.get("QRS_TEST_ADMIN_KEY")
        self.token: str = config.getoption("qrs_token") or os.environ.get("QRS_TEST_TOKEN") or DEFAULT_TOKEN
        self.instance: str | None = config.getoption("qrs_instance") or os.environ.get("QRS_TEST_INSTANCE")
        self.base_env = _parse_env(config.getini("qrs_env"))
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
        self._servers: dict[frozenset[tuple[str, str]], RuntimeServer] = {}

    def server(self, extra: Mapping[str, str] | None = None) -> RuntimeServer:
        """The server with the ini settings plus ``extra`` (``--qrs-url``'s when given and no ``extra``)."""
        if self.url is not None:
            if extra:
                pytest.skip(f"needs a server started with {dict(extra)}; --qrs-url runs against a given one")
            if self.worker != "master":
                warnings.warn(
                    "--qrs-url under pytest-xdist: every worker resets the same server; run with -n 0",
                    stacklevel=2,
                )
            key: frozenset[tuple[str, str]] = frozenset()
            if key not in self._servers:
                self._servers[key] = RuntimeServer(
                    self.url, token=self.token, instance=self.instance, admin_key=self.admin_key
                )
            return self._servers[key]
        env = {**self.base_env, **(extra or {})}
        key = frozenset(env.items())
        if key not in self._servers:
            self._servers[key] = EmbeddedServer(env, self.worker).start()
        return self._servers[key]

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qiskit-runtime-server", "qiskit-runtime-server fixtures (docs/testing.md)")
    group.addoption(
        "--qrs-url",
        default=None,
        help="run against this running server (base URL) instead of starting one; env QRS_TEST_URL",
    )
    group.addoption(
        "--qrs-admin-key", default=None, help="admin key for /admin/reset on --qrs-url; env QRS_TEST_ADMIN_KEY"
    )
    group.addoption(
        "--qrs-token", default=None, help=f"API key of the client (default {DEFAULT_TOKEN}); env QRS_TEST_TOKEN"
    )
    group.addoption("--qrs-instance", default=None, help="QISKIT_IBM_INSTANCE on --qrs-url; env QRS_TEST_INSTANCE")
    parser.addini("qrs_url", "like --qrs-url", default="")
    parser.addini("qrs_env", "settings of the server the plugin starts, one NAME=VALUE per line", type="linelist")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "qrs(env): run the test on a server started with these settings (a dict of QRS_* variables)"
    )
    config.stash[_REGISTRY] = ServerRegistry(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    registry = config.stash.get(_REGISTRY, None)
    if registry is not None:
        registry.close()


@pytest.fixture(scope="session")
def qiskit_runtime_server(pytestconfig: pytest.Config) -> RuntimeServer:
    """The session's server (started on first use); not reset: see ``qrs_server``."""
    return pytestconfig.stash[_REGISTRY].server()


@pytest.fixture
def qrs_server(request: pytest.FixtureRequest) -> RuntimeServer:
    """This test's server, reset before the test: no job, session or usage of another test."""
    marker = request.node.get_closest_marker("qrs")
    extra: dict[str, str] = {}
    if marker is not None:
        env = marker.kwargs.get("env", marker.args[0] if marker.args else {})
        if not isinstance(env, Mapping):
            raise pytest.UsageError("@pytest.mark.qrs(env={...}) takes a dict of settings")
        extra = {str(k): str(v) for k, v in env.items()}
    server = (
        request.config.stash[_REGISTRY].server(extra) if extra else request.getfixturevalue("qiskit_runtime_server")
    )
    server.reset()
    return server


@pytest.fixture
def runtime_service(qrs_server: RuntimeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A ``QiskitRuntimeService()`` on ``qrs_server``, configured by environment variables for this test."""
    local = isinstance(qrs_server, EmbeddedServer)
    for name in _CLIENT_VARIABLES + (_PROXY_VARIABLES if local else ()):
        monkeypatch.delenv(name, raising=False)
    for name, value in qrs_server.client_env().items():
        monkeypatch.setenv(name, value)
    from qiskit_ibm_runtime import QiskitRuntimeService

    yield QiskitRuntimeService()
