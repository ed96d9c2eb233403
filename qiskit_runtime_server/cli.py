"""``qiskit-runtime-server``: the embedded all-in-one server, or the ``api``/``worker`` halves.

qiskit-runtime-server [--host H] [--port P]           API + one worker, one process;
                                                      fakeredis unless REDIS_URL is set
qiskit-runtime-server api [--host H] [--port P]       the API only (needs REDIS_URL)
qiskit-runtime-server worker                          one worker (needs REDIS_URL)
qiskit-runtime-server worker-health                   exit 0 if a worker on this host has a
                                                      current heartbeat (container healthcheck)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from qiskit_runtime_server.shared.aio import cancel_and_wait
from qiskit_runtime_server.shared.logs import configure_logging
from qiskit_runtime_server.shared.settings import Settings, load_settings


def client_recipe(settings: Settings) -> str:
    """The ``export`` lines (and the ``url_resolver`` alternative) a user pastes to connect."""
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
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qiskit-runtime-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", help="listen address (QRS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (QRS_PORT, default 8000)")
    sub = parser.add_subparsers(dest="command")
    api = sub.add_parser("api", help="run the API only (REDIS_URL required)")
    api.add_argument("--host", dest="sub_host")
    api.add_argument("--port", dest="sub_port", type=int)
    sub.add_parser("worker", help="run one worker (REDIS_URL required)")
    sub.add_parser("worker-health", help="exit 0 if a worker on this host has a current heartbeat")
    return parser


def _serve(settings: Settings, embedded: bool) -> None:
    import uvicorn

    from qiskit_runtime_server.api.app import create_app
    from qiskit_runtime_server.api.server import server_config
    from qiskit_runtime_server.shared.queue import connect

    if not embedded:
        app = create_app(settings, on_ready=lambda: print(client_recipe(settings), flush=True))
        uvicorn.Server(server_config(app, settings)).run()
        return

    from qiskit_runtime_server.worker.app import build_worker

    @contextlib.asynccontextmanager
    async def with_worker(pool) -> AsyncIterator[None]:  # type: ignore[no-untyped-def]
        worker = build_worker(settings, pool, embedded=True)
        task = asyncio.create_task(worker.async_run())
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await worker.close()

    async def main() -> None:
        pool = await connect(settings.redis_url)
        app = create_app(
            settings, pool, background=with_worker, on_ready=lambda: print(client_recipe(settings), flush=True)
        )
        await uvicorn.Server(server_config(app, settings)).serve()

    asyncio.run(main())


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = _parser().parse_args(argv)
    host = getattr(args, "sub_host", None) or args.host
    port = getattr(args, "sub_port", None) or args.port
    settings = load_settings(host=host, port=port)
    if args.command in ("api", "worker", "worker-health") and settings.redis_url is None:
        sys.exit(f"qiskit-runtime-server {args.command}: set REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    if args.command == "worker-health":
        # A probe every 15 s: no log lines (it is not a worker, it has no worker id); the exit
        # status is its answer, and only errors (Redis unreachable) are printed.
        logging.disable(logging.WARNING)
        sys.exit(_worker_health(settings))
    worker_id = settings.effective_worker_id if args.command != "api" else None
    configure_logging(settings.log_level, settings.log_format, worker_id)
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
        _serve(settings, embedded=args.command is None)


if __name__ == "__main__":
    main()
