"""``qiskit-runtime-server``: the embedded all-in-one server, or the ``api``/``worker`` halves.

qiskit-runtime-server [--host H] [--port P]           API + QRS_WORKERS workers (default: one
                                                      per core), one process; fakeredis
                                                      unless REDIS_URL is set
qiskit-runtime-server api [--host H] [--port P]       the API only (needs REDIS_URL)
qiskit-runtime-server worker                          one worker (needs REDIS_URL)
qiskit-runtime-server worker-health                   exit 0 if a worker on this host has a
                                                      current heartbeat (container healthcheck)
qiskit-runtime-server export FILE                     write the store (REDIS_URL) as JSON lines
                                                      (docs/testing.md; FILE - is stdout)
qiskit-runtime-server import FILE                     load such a file into the store (REDIS_URL)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from qiskit_runtime_server.api.proxy.ca import ProxyFiles
from qiskit_runtime_server.shared.logs import configure_logging
from qiskit_runtime_server.shared.settings import Settings, load_settings
from qiskit_runtime_server.worker.embedded import WorkerPlan, physical_memory_mb, plan_workers, usable_cores

logger = logging.getLogger("qrs")


def client_recipe(settings: Settings, proxy: ProxyFiles | None = None) -> str:
    """The ``export`` lines (and the ``url_resolver`` alternative) a user pastes to connect.

    With ``proxy`` (proxy mode on), also the recipe of :func:`proxy_recipe`.
    """
    base = settings.base_url
    return f"""\
Qiskit Runtime server ready on {base}. Point the unmodified client at it with:

export QISKIT_IBM_TOKEN=any-api-key
export QISKIT_IBM_URL={base}/experimental/api/v1
export IAM_URL={base}
export GLOBAL_SEARCH_URL={base}/search
export GLOBAL_CATALOG_URL={base}/catalog

then: from qiskit_ibm_runtime import QiskitRuntimeService; service = QiskitRuntimeService()

Or, in Python without the URL variables (IAM_URL is still needed):
QiskitRuntimeService(channel="ibm_quantum_platform", token="any-api-key",
    instance="{settings.instance}", url="{base}",
    url_resolver=lambda *args, **kwargs: "{base}/api/v1")
""" + (proxy_recipe(settings, proxy) if proxy is not None else "")


def proxy_recipe(settings: Settings, proxy: ProxyFiles) -> str:
    """The environment of clients 0.40-0.48 (which hard-code IBM's hosts) for proxy mode."""
    listen = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"""
Proxy mode on {listen}:{settings.proxy_port}, for clients 0.40-0.48 (and any later one), by
environment variables only. Trusting the bundle below trusts this server for IBM's API hosts,
and only those; set it in one shell, not in your profile:

export QISKIT_IBM_TOKEN=any-api-key
export QISKIT_IBM_INSTANCE='{settings.instance}'
export HTTPS_PROXY=http://{listen}:{settings.proxy_port}
export REQUESTS_CA_BUNDLE={proxy.bundle}
export SSL_CERT_FILE={proxy.bundle}
export NO_PROXY=127.0.0.1,localhost
unset QISKIT_IBM_URL IAM_URL GLOBAL_SEARCH_URL GLOBAL_CATALOG_URL

then: from qiskit_ibm_runtime import QiskitRuntimeService; service = QiskitRuntimeService()
REQUESTS_CA_BUNDLE is read by qiskit-ibm-runtime (requests); SSL_CERT_FILE by clients on the
system store, such as QRMI (rustls), with IBM's URLs in its *_QRMI_IBM_QCS_* variables
(docs/qrmi.md).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qiskit-runtime-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", help="listen address (QRS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (QRS_PORT, default 8000)")
    parser.add_argument("--proxy-port", type=int, help="proxy mode's CONNECT port (QRS_PROXY_PORT, default off)")
    sub = parser.add_subparsers(dest="command")
    api = sub.add_parser("api", help="run the API only (REDIS_URL required)")
    api.add_argument("--host", dest="sub_host")
    api.add_argument("--port", dest="sub_port", type=int)
    api.add_argument("--proxy-port", dest="sub_proxy_port", type=int)
    sub.add_parser("worker", help="run one worker (REDIS_URL required)")
    sub.add_parser("worker-health", help="exit 0 if a worker on this host has a current heartbeat")
    export = sub.add_parser("export", help="write the store as JSON lines (REDIS_URL required)")
    export.add_argument("file", help="output file, - for stdout")
    load = sub.add_parser("import", help="load an export into the store (REDIS_URL required)")
    load.add_argument("file", help="input file, - for stdin")
    return parser


def _serve(settings: Settings, plan: WorkerPlan | None) -> None:
    """The API, and with ``plan`` (the all-in-one server) its workers in the same process."""
    from qiskit_runtime_server.api.app import create_app
    from qiskit_runtime_server.shared.queue import connect

    proxy = _proxy_files(settings)

    def ready() -> None:
        print(client_recipe(settings, proxy), flush=True)

    if plan is None:
        asyncio.run(_run_http(create_app(settings, on_ready=ready), settings, proxy))
        return

    from qiskit_runtime_server.worker.embedded import embedded_workers

    @contextlib.asynccontextmanager
    async def with_worker(pool) -> AsyncIterator[None]:  # type: ignore[no-untyped-def]
        async with embedded_workers(settings, pool, plan):
            yield

    async def main() -> None:
        pool = await connect(settings.redis_url)
        await _run_http(create_app(settings, pool, background=with_worker, on_ready=ready), settings, proxy)

    asyncio.run(main())


def _proxy_files(settings: Settings) -> ProxyFiles | None:
    """Proxy mode's certificates (made or reused now, so the recipe can name them), or None when off."""
    if settings.proxy_port is None:
        return None
    from pathlib import Path

    from qiskit_runtime_server.api.proxy.ca import default_proxy_dir, ensure_certificates

    directory = Path(settings.proxy_dir).expanduser() if settings.proxy_dir else default_proxy_dir()
    try:
        return ensure_certificates(directory)
    except (PermissionError, ValueError) as exc:
        sys.exit(f"qiskit-runtime-server: proxy mode: {exc}")


async def _run_http(app: object, settings: Settings, proxy: ProxyFiles | None) -> None:
    """uvicorn on ``settings.host:port``, and proxy mode's CONNECT listener beside it when on."""
    import uvicorn

    from qiskit_runtime_server.api.server import server_config

    server = uvicorn.Server(server_config(app, settings))
    if proxy is None or settings.proxy_port is None:
        await server.serve()
        return
    from qiskit_runtime_server.api.proxy.ca import server_context
    from qiskit_runtime_server.api.proxy.tunnel import ConnectProxy, running_proxy

    upstream_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    tunnel = ConnectProxy(settings.host, settings.proxy_port, (upstream_host, settings.port), server_context(proxy))
    async with running_proxy(tunnel):
        await server.serve()


def _work(settings: Settings) -> None:
    from qiskit_runtime_server.shared.queue import connect
    from qiskit_runtime_server.worker.app import build_worker

    async def main() -> None:
        pool = await connect(settings.redis_url)
        worker = build_worker(settings, pool)
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            pass
        finally:
            await worker.close()

    asyncio.run(main())


def _worker_health(settings: Settings) -> int:
    """0 if a live worker registered from this host (container), else 1."""
    import socket

    from qiskit_runtime_server.shared.queue import connect
    from qiskit_runtime_server.shared.workers import live_workers

    async def check() -> bool:
        pool = await connect(settings.redis_url)
        try:
            host = socket.gethostname()
            return any(w.host == host for w in await live_workers(pool))
        finally:
            await pool.aclose()

    return 0 if asyncio.run(asyncio.wait_for(check(), timeout=8)) else 1


def _snapshot(settings: Settings, command: str, path: str) -> None:
    """``export FILE`` / ``import FILE`` on ``REDIS_URL`` (``shared/snapshot.py``)."""
    from qiskit_runtime_server.shared import snapshot
    from qiskit_runtime_server.shared.queue import connect

    async def run() -> None:
        pool = await connect(settings.redis_url)
        try:
            if command == "export":
                with contextlib.ExitStack() as stack:
                    out = sys.stdout.buffer if path == "-" else stack.enter_context(open(path, "wb"))
                    async for line in snapshot.export_lines(pool):
                        out.write(line)
                return
            with contextlib.ExitStack() as stack:
                source = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))

                async def lines() -> AsyncIterator[bytes]:
                    for line in source:
                        yield line

                report = await snapshot.import_lines(
                    pool, lines(), queue_name=settings.queue_name, retention=settings.job_retention
                )
            print(
                f"imported {report.jobs} jobs, {report.sessions} sessions, {report.usage} usage counters; "
                f"skipped {len(report.skipped)} already there",
                file=sys.stderr,
            )
        finally:
            await pool.aclose()

    try:
        asyncio.run(run())
    except (OSError, snapshot.SnapshotError) as exc:
        sys.exit(f"qiskit-runtime-server {command}: {exc}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = _parser().parse_args(argv)
    host = getattr(args, "sub_host", None) or args.host
    port = getattr(args, "sub_port", None) or args.port
    proxy_port = getattr(args, "sub_proxy_port", None) or args.proxy_port
    settings = load_settings(host=host, port=port, proxy_port=proxy_port)
    if args.command in ("api", "worker", "worker-health", "export", "import") and settings.redis_url is None:
        sys.exit(f"qiskit-runtime-server {args.command}: set REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    if args.command in ("export", "import"):
        _snapshot(settings, args.command, args.file)
        return
    if args.command == "worker-health":
        # A probe every 15 s: no log lines (it is not a worker, it has no worker id); the exit
        # status is its answer, and only errors (Redis unreachable) are printed.
        logging.disable(logging.WARNING)
        sys.exit(_worker_health(settings))
    plan = None
    if args.command is None:
        plan = plan_workers(
            settings.workers, settings.job_memory_limit, cores=usable_cores(), memory_mb=physical_memory_mb()
        )
    # Several workers in one process: each line names its own (worker/embedded.py), API lines none.
    one_worker = args.command == "worker" or (plan is not None and plan.workers == 1)
    configure_logging(settings.log_level, settings.log_format, settings.effective_worker_id if one_worker else None)
    if plan is not None:
        for note in plan.notes:
            logger.warning("%s", note)
        logger.info("all-in-one server: %s (QRS_WORKERS, docs/workers.md)", plan.describe())
    elif args.command == "worker" and settings.workers:
        logger.info("QRS_WORKERS is for the all-in-one server; this `worker` process is one worker (start more)")
    if args.command != "api":
        from qiskit_runtime_server.shared.routing import worker_class
        from qiskit_runtime_server.worker.device import DeviceUnavailable, require_device

        try:
            require_device(settings.device)
            worker_class(settings.queue_class, settings.device)
        except (DeviceUnavailable, ValueError) as exc:
            sys.exit(f"qiskit-runtime-server: {exc}")
    if args.command == "worker":
        _work(settings)
    else:
        _serve(settings, plan)


if __name__ == "__main__":
    main()
