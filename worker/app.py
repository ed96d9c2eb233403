"""Builds the arq ``Worker``: functions, start-up (child runner) and shutdown."""

from __future__ import annotations

import logging
from typing import Any

from arq import Worker
from arq.connections import ArqRedis
from arq.utils import poll
from arq.worker import func

from shared.queue import RUN_JOB
from shared.settings import Settings
from shared.store import JobStore
from worker.runner import ProgramRunner
from worker.tasks import run_job

logger = logging.getLogger("qrs.worker")


class EmbeddedWorker(Worker):
    """A ``Worker`` that runs on fakeredis inside the API process.

    arq's ``main`` logs ``INFO`` from Redis at start-up, a command fakeredis does not have;
    everything else is arq's own polling loop.
    """

    async def main(self) -> None:
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        async for _ in poll(self.poll_delay_s):
            await self._poll_iteration()


def build_worker(settings: Settings, pool: ArqRedis, *, embedded: bool = False) -> Worker:
    """An arq worker consuming ``settings.queue_name`` on ``pool``, one job at a time.

    One job at a time because each worker owns one simulation process (one GPU when pinned);
    scale by adding workers.
    """
    runner = ProgramRunner()
    worker_id = settings.effective_worker_id

    async def startup(ctx: dict[str, Any]) -> None:
        ctx.update(store=JobStore(pool), runner=runner, settings=settings, worker_id=worker_id)
        runner.start()
        logger.info("worker %s ready (device %s, queue %s)", worker_id, settings.device, settings.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        runner.close()

    cls = EmbeddedWorker if embedded else Worker
    return cls(
        functions=[func(run_job, name=RUN_JOB, timeout=settings.max_execution_time + 60)],
        redis_pool=pool,
        queue_name=settings.queue_name,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=1,
        poll_delay=settings.poll_delay,
        max_tries=settings.max_attempts + 1,
        keep_result=60,
        handle_signals=not embedded,
    )
