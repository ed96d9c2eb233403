"""Device-class queues: CPU-class work on ``{QRS_QUEUE_NAME}``, GPU-class work on ``{QRS_QUEUE_NAME}:gpu``.

Rule (docs/deployment.md, "GPU and CPU workers in one deployment"):

* Every job is queued on the CPU-class queue by ``POST /jobs`` (the API does not import qiskit
  and cannot see how wide a circuit's interacting groups are).
* A CPU-class worker that takes a job while a GPU-class worker is live asks its simulation
  process to classify the decoded job (``worker/programs/device_class.py``, the thresholds of
  ``worker/engines/aer.py``); a GPU-class job is moved to the GPU-class queue in the same
  MULTI that ends arq's claim on it (no attempt counted, the record stays ``Queued``).
* A GPU-class worker consumes its own queue and, when that has nothing ready, moves the oldest
  ready CPU-class job into it: it never sits idle while there is work.
* A CPU-class worker moves GPU-class jobs back to its own queue while no GPU-class worker is
  live (none deployed, or all gone): no job waits for a GPU that does not exist.

A worker's class is ``QRS_QUEUE_CLASS`` (``cpu``/``gpu``), by default its ``QRS_DEVICE``; a
CPU worker with ``QRS_QUEUE_CLASS=gpu`` stands in for a GPU worker in tests. Live workers are
read from the registry (``shared/workers.py``), whose ``queue`` field is the consumed queue.
"""

from __future__ import annotations

import time

from arq.constants import in_progress_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from redis.asyncio import Redis
from redis.exceptions import WatchError

from qiskit_runtime_server.shared import keys, workers

CPU, GPU = "cpu", "gpu"
CLASSES = (CPU, GPU)
# How long a worker trusts its last read of the registry ("is a GPU-class worker live?").
LIVE_CACHE_SECONDS = 1.0
# Ready CPU-class entries a GPU-class worker looks through for one not already being claimed.
_STEAL_SCAN = 10


def class_queue(queue_name: str, device_class: str) -> str:
    """The arq queue of ``device_class``: ``queue_name`` for ``cpu``, ``queue_name + ":gpu"`` for ``gpu``."""
    return queue_name if device_class == CPU else f"{queue_name}:{GPU}"


def worker_class(queue_class: str, device: str) -> str:
    """A worker's class from ``QRS_QUEUE_CLASS`` (``""``: follow ``QRS_DEVICE``).

    Raises:
        ValueError: ``queue_class`` is neither empty, ``cpu`` nor ``gpu``.
    """
    wanted = (queue_class or device).lower()
    if wanted not in CLASSES:
        raise ValueError(f"QRS_QUEUE_CLASS={queue_class!r} is not one of cpu, gpu.")
    return wanted


class Router:
    """One worker's side of the routing rule: which queue it owns, what it may take from the other.

    ``queue_name`` is ``QRS_QUEUE_NAME``; ``device_class`` the worker's class.
    """

    def __init__(self, redis: Redis, queue_name: str, device_class: str) -> None:
        self.redis = redis
        self.device_class = device_class
        self.cpu_queue = class_queue(queue_name, CPU)
        self.gpu_queue = class_queue(queue_name, GPU)
        self.own = self.gpu_queue if device_class == GPU else self.cpu_queue
        self.other = self.cpu_queue if device_class == GPU else self.gpu_queue
        self._live: tuple[float, bool] = (0.0, False)

    async def gpu_workers_live(self) -> bool:
        """Whether a worker consuming the GPU-class queue has a current heartbeat (cached 1 s)."""
        checked, live = self._live
        if time.monotonic() - checked > LIVE_CACHE_SECONDS:
            live = any(w.queue == self.gpu_queue for w in await workers.live_workers(self.redis))
            self._live = (time.monotonic(), live)
        return live

    async def should_classify(self) -> bool:
        """A CPU-class worker classifies a job only while a GPU-class worker could take it."""
        return self.device_class == CPU and await self.gpu_workers_live()

    async def take_other_work(self) -> str | None:
        """Move one ready job of the other class's queue into this worker's own; its arq id or None.

        Only when the own queue has nothing ready; a CPU-class worker only while no GPU-class
        worker is live. An entry arq is claiming (in-progress key set) is left alone. WATCH on
        both queues and the entry's in-progress key keeps a racing claim from losing or doubling it.
        """
        if self.device_class == CPU and await self.gpu_workers_live():
            return None
        now = timestamp_ms()
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip per idle poll
            pipe.zcount(self.own, "-inf", now)
            pipe.zcount(self.other, "-inf", now)
            own_ready, other_ready = await pipe.execute()
        if own_ready or not other_ready:
            return None
        entries = await self.redis.zrangebyscore(self.other, "-inf", now, start=0, num=_STEAL_SCAN, withscores=True)
        for raw, score in entries:
            job_id = raw.decode() if isinstance(raw, bytes) else raw
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.own, self.other, in_progress_key_prefix + job_id)
                    claimed = await pipe.exists(in_progress_key_prefix + job_id)
                    if claimed or await pipe.zscore(self.other, job_id) is None:
                        continue
                    pipe.multi()
                    pipe.zrem(self.other, job_id)
                    pipe.zadd(self.own, {job_id: score})
                    # arq's claim WATCHes only the in-progress key, not the queue: touching that
                    # key (set, then gone) makes a worker claiming the entry right now back off,
                    # instead of running it while it also sits in this queue.
                    pipe.set(in_progress_key_prefix + job_id, b"moving")
                    pipe.delete(in_progress_key_prefix + job_id)
                    await pipe.execute()
                    return job_id
                except WatchError:
                    continue
        return None

    async def forward_to_gpu(self, job_id: str) -> None:
        """End this worker's arq claim on ``job_id`` and queue it on the GPU-class queue, in one MULTI.

        arq's job key (function and arguments) is kept, so the GPU-class worker runs the very
        same arq job; the retry counter is dropped because a forward is not an attempt. The
        doorbell wakes an idle GPU-class worker.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(in_progress_key_prefix + job_id, retry_key_prefix + job_id)
            pipe.zrem(self.cpu_queue, job_id)
            pipe.zadd(self.gpu_queue, {job_id: timestamp_ms()})
            await pipe.execute()
        await self.redis.publish(keys.ENQUEUED_CHANNEL, self.gpu_queue)
