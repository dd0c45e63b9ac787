"""NATS JetStream as the job queue of the distributed mode.

One work-queue stream holds a message per file; every worker binds to one durable pull
consumer, so each message goes to one worker at a time and is redelivered if that worker
dies before acking. nats-py is asyncio-only: it runs on a private event loop thread and this
class offers the same blocking interface as the in-process queue."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from imageimport.errors import ConfigError, TransientError
from imageimport.queue.base import Delivery, Job, JobQueue
from imageimport.settings import redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAM = "IMAGEIMPORT_ITEMS"
SUBJECT = "imageimport.items"
DURABLE = "imageimport-workers"
# Long enough that a planner restarted after a crash finds its earlier messages.
DUPLICATE_WINDOW_SECONDS = 30 * 60


class NatsQueue(JobQueue):
    def __init__(
        self,
        url: str,
        max_deliver: int,
        ack_wait_seconds: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url
        # One extra delivery beyond the worker's own limit: it lets a worker record the
        # failure of an item whose processing kept crashing the worker outright.
        self.server_max_deliver = max_deliver + 1
        self.ack_wait = ack_wait_seconds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="nats-loop", daemon=True
        )
        self._thread.start()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._closing = False
        try:
            self._call(self._connect(connect_timeout), timeout=connect_timeout + 30)
        except Exception:
            self.close()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _connect(self, timeout: float) -> None:
        try:
            self._nc = await nats.connect(
                self.url,
                connect_timeout=timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # outages end; workers wait them out
                reconnect_time_wait=1,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            )
        except (TimeoutError, OSError, NatsError) as error:
            raise TransientError(
                f"Cannot connect to NATS at {redact_url(self.url)}: {error}"
            ) from error
        self._js = self._nc.jetstream(timeout=10)
        await self._ensure_stream()
        await self._ensure_consumer()
        self._sub = await self._js.pull_subscribe_bind(DURABLE, STREAM)

    async def _ensure_stream(self) -> None:
        assert self._js is not None
        config = api.StreamConfig(
            name=STREAM,
            subjects=[SUBJECT],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        try:
            await self._js.stream_info(STREAM)
        except NotFoundError:
            try:
                await self._js.add_stream(config)
                return
            except nats.js.errors.BadRequestError:
                pass  # another process created it first
        try:
            await self._js.update_stream(config)
        except nats.js.errors.APIError as error:
            raise ConfigError(
                f"The JetStream stream {STREAM} exists with a configuration that cannot be "
                f"updated ({error.description}); delete it or fix it by hand."
            ) from error

    async def _ensure_consumer(self) -> None:
        assert self._js is not None
        config = api.ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            max_deliver=self.server_max_deliver,
            ack_wait=self.ack_wait,
            max_ack_pending=10_000,
        )
        await self._js.add_consumer(STREAM, config)

    async def _on_error(self, error: Exception) -> None:
        log.warning("NATS: %s", error)

    async def _on_disconnect(self) -> None:
        if not self._closing:
            log.warning("NATS: disconnected from %s; reconnecting", redact_url(self.url))

    async def _on_reconnect(self) -> None:
        log.info("NATS: reconnected")

    def publish(self, jobs: Sequence[Job]) -> None:
        if jobs:
            self._call(self._publish(jobs), timeout=120)

    async def _publish(self, jobs: Sequence[Job]) -> None:
        assert self._js is not None
        try:
            # Async publishes pipeline the acknowledgements instead of a round trip each.
            pending = [
                await self._js.publish_async(
                    SUBJECT, job.encode(), headers={"Nats-Msg-Id": job.dedup_id}, wait_stall=30
                )
                for job in jobs
            ]
            await asyncio.wait_for(asyncio.gather(*pending), timeout=60)
        except (TimeoutError, NatsError, OSError) as error:
            raise TransientError(f"Publishing to NATS failed: {error!r}") from error

    def pull(self, max_jobs: int, timeout: float) -> list[Delivery]:
        return self._call(self._pull(max_jobs, timeout), timeout=timeout + 30)

    async def _pull(self, max_jobs: int, timeout: float) -> list[Delivery]:
        assert self._sub is not None
        try:
            messages = await self._sub.fetch(max_jobs, timeout=max(timeout, 0.1))
        except (TimeoutError, NatsTimeoutError):
            return []
        except (NatsError, OSError) as error:
            raise TransientError(f"Fetching from NATS failed: {error!r}") from error
        deliveries: list[Delivery] = []
        for message in messages:
            try:
                job = Job.decode(message.data)
            except (ValueError, KeyError, TypeError):
                log.error("dropping a malformed message: %r", message.data[:200])
                await message.term()
                continue
            deliveries.append(NatsDelivery(self, message, job))
        return deliveries

    def pending_count(self) -> int:
        """Messages not yet delivered plus those delivered but not acked."""
        assert self._js is not None
        info = self._call(self._js.consumer_info(STREAM, DURABLE), timeout=30)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def close(self) -> None:
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                # close, not drain: a drain waits out pending fetches, and anything not
                # acked is redelivered to another worker anyway.
                self._call(self._nc.close(), timeout=10)
            except Exception:
                log.debug("NATS close failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class NatsDelivery(Delivery):
    def __init__(self, queue: NatsQueue, message: Msg, job: Job) -> None:
        self._queue = queue
        self._message = message
        self.job = job
        self.attempt = int(message.metadata.num_delivered or 1)

    def _settle(self, coroutine: Coroutine[Any, Any, object]) -> None:
        try:
            self._queue._call(coroutine, timeout=15)
        except Exception as error:
            # The message comes back after ack_wait; processing is idempotent.
            raise TransientError(f"Settling a NATS message failed: {error!r}") from error

    def ack(self) -> None:
        self._settle(self._message.ack_sync(timeout=10))

    def retry_later(self, delay_seconds: float) -> None:
        self._settle(self._message.nak(delay=max(0.0, delay_seconds)))

    def give_up(self) -> None:
        self._settle(self._message.term())

    def in_progress(self) -> None:
        try:
            self._queue._call(self._message.in_progress(), timeout=5)
        except Exception:
            log.debug("in_progress failed", exc_info=True)
