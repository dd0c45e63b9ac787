"""NATS JetStream as the job queue of the distributed mode.

One work-queue stream holds a message per file, on a subject per import; every worker binds
to one durable pull consumer, so each message goes to one worker at a time and is redelivered
if that worker dies before acking. A worker shares its slots between imports by skipping the
messages of an import that has its share in flight (see `_pull`). nats-py is asyncio-only:
it runs on a private event loop thread and this class offers the same blocking interface as
the in-process queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError, ServiceUnavailableError

from imageimport.errors import ConfigError, TransientError
from imageimport.queue.base import Delivery, Job, JobQueue
from imageimport.settings import redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAM = "IMAGEIMPORT_ITEMS"
# Each import's jobs go to a subject of its own (imageimport.items.<import id>), so the stream
# can say how many messages each import has; the bare subject holds older jobs.
SUBJECT = "imageimport.items"
DURABLE = "imageimport-workers"
# Long enough that a planner restarted after a crash finds its earlier messages.
DUPLICATE_WINDOW_SECONDS = 30 * 60
# The longest wait for one TCP connection (and TLS handshake) to a server.
ATTEMPT_TIMEOUT_SECONDS = 10.0
# Each step of handing a job back while stopping: short, since shutdown waits on it.
HAND_BACK_TIMEOUT_SECONDS = 2.0
# How stale the stream's per-import message counts may be when deciding to skip an import.
COUNTS_MAX_AGE_SECONDS = 2.0
# How long one pull may go on skipping messages past its own timeout.
SEARCH_SECONDS = 5.0
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


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
        self._fair = _Fairness()
        self._keeper: asyncio.Future[None] | None = None
        # While the first connection is being made: the last error, and whether the server
        # refused the credentials (no point in trying again then).
        self._connected = False
        self._connect_error: BaseException | None = None
        self._refusal: BaseException | None = None
        self._refused = asyncio.Event()
        try:
            # _connect keeps to its own deadlines; this one only guards against a hang.
            self._call(self._connect(connect_timeout), timeout=connect_timeout + 60)
        except TimeoutError:
            self.close()
            raise TransientError(
                f"NATS at {redact_url(url)} did not finish setting up the queue; check "
                "NATS_URL and that the NATS server (with JetStream) is healthy."
            ) from None
        except Exception:
            self.close()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()  # no coroutine left running on the loop after we gave up on it
            raise

    async def _connect(self, deadline: float) -> None:
        """Connect within `deadline` seconds, or raise an error that says what to check.

        Once connected, the client reconnects forever (outages end; workers wait them out).
        nats-py applies that limit to the first connection too, so a wrong NATS_URL would
        retry forever: the first connection gets a deadline of its own instead."""
        url = redact_url(self.url)
        self._nc = Client()
        connecting = asyncio.ensure_future(
            self._nc.connect(
                self.url,
                # nats-py declares whole seconds; `deadline` bounds the whole wait below.
                connect_timeout=math.ceil(min(deadline, ATTEMPT_TIMEOUT_SECONDS)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            )
        )
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait(
                {connecting, refused}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            refused.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(BaseException):
                    await connecting
        if self._refused.is_set():
            raise ConfigError(
                f"NATS at {url} refused the connection ({_reason(self._refusal)}); "
                "check the credentials in NATS_URL."
            )
        if connecting.cancelled():
            raise TransientError(
                f"Cannot connect to NATS at {url} within {deadline:g} seconds "
                f"({_reason(self._connect_error)}); check NATS_URL and that the NATS server "
                "is running and reachable from here."
            )
        error = connecting.exception()
        if error is not None:
            # Every network error is retried until the deadline: what is left is the URL.
            raise ConfigError(
                f"NATS_URL ({url}) is not a usable NATS URL ({_reason(error)}); "
                "it should look like nats://host:4222."
            ) from error
        self._connected = True
        try:
            self._js = self._nc.jetstream(timeout=10)
            await self._ensure_stream()
            await self._ensure_consumer()
            self._sub = await self._js.pull_subscribe_bind(DURABLE, STREAM)
            self._keeper = asyncio.ensure_future(self._keep_parked())
        except (ServiceUnavailableError, NoRespondersError) as error:
            raise TransientError(
                f"NATS at {url} answers but JetStream does not; check that the server runs "
                "with JetStream enabled (nats-server --jetstream) and has finished starting."
            ) from error
        except (TimeoutError, OSError, NatsError) as error:
            raise TransientError(
                f"Setting up the JetStream stream on NATS at {url} failed ({_reason(error)}); "
                "check that the NATS server is healthy."
            ) from error

    async def _ensure_stream(self) -> None:
        assert self._js is not None
        config = api.StreamConfig(
            name=STREAM,
            subjects=[SUBJECT, f"{SUBJECT}.>"],
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
        if self._connected:
            log.warning("NATS: %s", error)
            return
        # The first connection reports its last error once, when it gives up.
        log.debug("NATS: connecting to %s: %r", redact_url(self.url), error)
        self._connect_error = error
        if _is_refusal(error) and self._refusal is None:
            self._refusal = error  # the reset of the connection that follows says less
            self._refused.set()

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
                    subject_of(job),
                    job.encode(),
                    headers={"Nats-Msg-Id": job.dedup_id},
                    wait_stall=30,
                )
                for job in jobs
            ]
            await asyncio.wait_for(asyncio.gather(*pending), timeout=60)
        except (TimeoutError, NatsError, OSError) as error:
            raise TransientError(f"Publishing to NATS failed: {error!r}") from error

    def pull(self, max_jobs: int, timeout: float, per_import: int | None = None) -> list[Delivery]:
        return self._call(self._pull(max_jobs, timeout, per_import), timeout=timeout + 60)

    async def _pull(self, max_jobs: int, timeout: float, per_import: int | None) -> list[Delivery]:
        """The consumer hands messages out in stream order. A message of an import that has
        its share in flight here is skipped while another import has messages waiting:
        handed back to the end of the stream as a new message, which costs no attempt.
        Otherwise it is parked here (kept from the server's redelivery by in-progress pings)
        until its import has room, so that an import alone in the stream is not sent round
        and round; it goes back as soon as another import turns out to be waiting."""
        fair = self._fair
        deadline = time.monotonic() + timeout
        batch: list[Delivery] = []
        for parked in list(fair.parked):
            if len(batch) < max_jobs and fair.has_room(parked.job.import_id, per_import):
                fair.parked.remove(parked)
                batch.append(self._hand_out(parked.message, parked.job))
        if fair.parked and await self._others_waiting(per_import):
            await self._unpark()
        # Fetch again only while every message fetched was skipped: a search for another
        # import's messages, which ends when the stream has come round (see _skip).
        while not batch and not fair.parked:
            remaining = deadline - time.monotonic()
            if remaining < -SEARCH_SECONDS:
                break  # the next pull goes on from here
            messages = await self._fetch(max_jobs, max(remaining, 0.1))
            if not messages:
                break
            for message in messages:
                job = await self._decoded(message)
                if job is None:
                    continue
                if fair.has_room(job.import_id, per_import):
                    batch.append(self._hand_out(message, job))
                elif await self._skip(message, job, per_import):
                    try:
                        await self._hand_back(message, _untried(message, job))
                    except (TimeoutError, NatsError, OSError) as error:
                        # Not acked: it comes back after ack_wait (counted as a delivery).
                        log.warning("skipping a message failed: %r", error)
                elif fair.has_room(job.import_id, per_import):
                    batch.append(self._hand_out(message, job))  # a slot freed meanwhile
                else:
                    fair.parked.append(_Parked(message, job))
        if not batch and fair.parked:
            # Nothing to do until a delivery settles here (its import has room again).
            fair.settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fair.settled.wait(), max(0.0, deadline - time.monotonic()))
        return batch

    async def _fetch(self, count: int, timeout: float) -> list[Msg]:
        assert self._sub is not None
        try:
            return await self._sub.fetch(count, timeout=timeout)
        except (TimeoutError, NatsTimeoutError):
            return []
        except (NatsError, OSError) as error:
            raise TransientError(f"Fetching from NATS failed: {error!r}") from error

    async def _decoded(self, message: Msg) -> Job | None:
        try:
            return Job.decode(message.data)
        except (ValueError, KeyError, TypeError):
            log.error("dropping a malformed message: %r", message.data[:200])
            await message.term()
            return None

    def _hand_out(self, message: Msg, job: Job) -> NatsDelivery:
        self._fair.in_flight[job.import_id] += 1
        return NatsDelivery(self, message, job)

    async def _settled(self, coroutine: Coroutine[Any, Any, object], import_id: str) -> None:
        fair = self._fair
        try:
            await coroutine
        finally:
            fair.in_flight[import_id] -= 1
            if fair.in_flight[import_id] <= 0:
                del fair.in_flight[import_id]
            fair.settled.set()

    async def _others_waiting(
        self, per_import: int | None, fresh: bool = False, besides: str | None = None
    ) -> bool:
        """Whether an import with room here, and none of its messages parked here, has more
        messages in the stream than it has in flight here, and either the counts grew or a
        while passed since a search last came round the stream without finding them (they
        were in flight elsewhere)."""
        assert self._js is not None
        fair = self._fair
        now = time.monotonic()
        if fresh or now - fair.counts_at > COUNTS_MAX_AGE_SECONDS:
            try:
                info = await self._js.stream_info(STREAM, subjects_filter=f"{SUBJECT}.>")
            except (TimeoutError, NatsError, OSError):
                return False  # then parked: the side that costs nothing
            fair.counts = {
                subject.removeprefix(f"{SUBJECT}."): int(count)
                for subject, count in (info.state.subjects or {}).items()
            }
            fair.last_seq = int(info.state.last_seq or 0)
            fair.counts_at = now
        # Not "another" import: the one whose message is being decided (`besides`), nor one
        # parked here, even if a delivery that settled while this awaited gave it room.
        mine = {p.job.import_id for p in fair.parked} | {besides}
        waiting = {
            import_id: count
            for import_id, count in fair.counts.items()
            if count > fair.in_flight[import_id]
            and import_id not in mine
            and fair.has_room(import_id, per_import)
        }
        if fair.round is not None:
            counts, at = fair.round
            grew = any(count > counts.get(import_id, 0) for import_id, count in waiting.items())
            if not grew and now - at < self.ack_wait / 2:
                return False
            fair.round = None
        return bool(waiting)

    async def _skip(self, message: Msg, job: Job, per_import: int | None) -> bool:
        """Whether to hand back this message of an import at its share, to reach another
        import's messages further on; False once the search has come round the stream."""
        fair = self._fair
        if fair.pass_end is None:
            if not await self._others_waiting(per_import, fresh=True, besides=job.import_id):
                return False
            fair.pass_end = fair.last_seq
            return True
        sequence = message.metadata.sequence.stream if message.metadata.sequence else 0
        if sequence > fair.pass_end or not await self._others_waiting(
            per_import, besides=job.import_id
        ):
            # Every message there was when the search began has been seen: the ones counted
            # are in flight elsewhere (or done meanwhile).
            fair.round, fair.pass_end = (dict(fair.counts), time.monotonic()), None
            return False
        return True

    async def _unpark(self) -> None:
        """Hand every parked message back: another import is waiting behind them."""
        fair = self._fair
        while fair.parked:
            parked = fair.parked.popleft()
            try:
                await self._hand_back(parked.message, _untried(parked.message, parked.job))
            except (TimeoutError, NatsError, OSError) as error:
                log.debug("handing a parked message back failed: %r", error)

    async def _keep_parked(self) -> None:
        """Tell the server the parked messages are still being worked on, so it does not
        hand them out again (counted as a delivery) while they wait for room here."""
        while not self._closing:
            await asyncio.sleep(self.ack_wait / 3)
            for parked in list(self._fair.parked):
                with contextlib.suppress(TimeoutError, NatsError, OSError):
                    await parked.message.in_progress()

    async def _hand_back(self, message: Msg, job: Job) -> None:
        """Publish `job` as a new message, then ack the old one. A new message starts with no
        deliveries, so the job carries the attempts so far; its id is new too (the old one
        is still in the duplicate window), yet the same for the same delivery."""
        assert self._js is not None
        sequence = message.metadata.sequence.stream if message.metadata.sequence else 0
        await self._js.publish(
            subject_of(job),
            job.encode(),
            timeout=HAND_BACK_TIMEOUT_SECONDS,
            headers={"Nats-Msg-Id": f"{job.dedup_id}@{sequence}"},
        )
        await message.ack_sync(timeout=HAND_BACK_TIMEOUT_SECONDS)

    def pending_count(self) -> int:
        """Messages not yet delivered plus those delivered but not acked."""
        assert self._js is not None and self._nc is not None
        url = redact_url(self.url)
        if not self._nc.is_connected:
            # Asking would wait out the request timeout: say so at once.
            raise TransientError(f"NATS at {url} is unreachable (reconnecting).")
        try:
            info = self._call(self._js.consumer_info(STREAM, DURABLE), timeout=30)
        except (TimeoutError, OSError, NatsError) as error:
            raise TransientError(
                f"NATS at {url} did not say how much work is queued ({_reason(error)})."
            ) from error
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def close(self) -> None:
        if self._closing:
            return  # closed already: the loop has stopped
        self._closing = True
        if self._fair.parked and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                self._call(self._release_parked(), timeout=2 * HAND_BACK_TIMEOUT_SECONDS + 5)
        if self._nc is not None and not self._nc.is_closed:
            try:
                # close, not drain: a drain waits out pending fetches, and anything not
                # acked is redelivered to another worker anyway.
                self._call(self._nc.close(), timeout=10)
            except Exception:
                log.debug("NATS close failed", exc_info=True)
        if self._keeper is not None:
            with contextlib.suppress(Exception):
                self._call(_cancelled(self._keeper), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _release_parked(self) -> None:
        fair = self._fair
        while fair.parked:
            parked = fair.parked.popleft()
            with contextlib.suppress(TimeoutError, NatsError, OSError):
                await self._hand_back(parked.message, _untried(parked.message, parked.job))


async def _cancelled(task: asyncio.Future[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def subject_of(job: Job) -> str:
    # Import ids are UUIDs; anything that is not a plain subject token keeps the bare subject.
    return f"{SUBJECT}.{job.import_id}" if _TOKEN.fullmatch(job.import_id) else SUBJECT


def _untried(message: Msg, job: Job) -> Job:
    """`job` for a new message: the attempts before this delivery, which was not tried."""
    delivered = int(message.metadata.num_delivered or 1)
    return replace(job, attempts=job.attempts + delivered - 1)


@dataclass
class _Parked:
    message: Msg
    job: Job


@dataclass
class _Fairness:
    """What this process knows to share its slots between imports (on the NATS loop only)."""

    in_flight: Counter[str] = field(default_factory=Counter)
    parked: deque[_Parked] = field(default_factory=deque)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    counts: dict[str, int] = field(default_factory=dict)
    counts_at: float = float("-inf")
    last_seq: int = 0
    pass_end: int | None = None  # the stream's last sequence when the current search began
    round: tuple[dict[str, int], float] | None = None  # counts and time a search came round

    def has_room(self, import_id: str, per_import: int | None) -> bool:
        return per_import is None or self.in_flight[import_id] < per_import


def _reason(error: BaseException | None) -> str:
    """A few words on why a connection failed, without a traceback's worth of detail."""
    if error is None or isinstance(error, TimeoutError | NatsTimeoutError):
        return "no answer"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"unknown host: {error.strerror}" if error.strerror else "unknown host"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _is_refusal(error: BaseException) -> bool:
    """The server turned the credentials down: trying again cannot help."""
    text = str(error).lower()
    return isinstance(error, nats.errors.AuthorizationError) or "authorization violation" in text


class NatsDelivery(Delivery):
    def __init__(self, queue: NatsQueue, message: Msg, job: Job) -> None:
        self._queue = queue
        self._message = message
        self.job = job
        self.attempt = job.attempts + int(message.metadata.num_delivered or 1)

    def _settle(self, coroutine: Coroutine[Any, Any, object], timeout: float = 15) -> None:
        try:
            self._queue._call(self._queue._settled(coroutine, self.job.import_id), timeout)
        except Exception as error:
            # The message comes back after ack_wait; processing is idempotent.
            raise TransientError(f"Settling a NATS message failed: {error!r}") from error

    def ack(self) -> None:
        # Not waited for (as NAK and TERM are not): the outcome is committed already, so an
        # ack lost on the way only brings the message back, and the item is found settled.
        self._settle(self._message.ack())

    def retry_later(self, delay_seconds: float) -> None:
        self._settle(self._message.nak(delay=max(0.0, delay_seconds)))

    def give_up(self) -> None:
        self._settle(self._message.term())

    def release(self) -> None:
        # A NAK would count as a delivery toward max_deliver: the job moves to a new
        # message instead, carrying only the attempts that really happened. If that fails,
        # the message is not acked and comes back after ack_wait, counted as one delivery.
        untried = _untried(self._message, self.job)
        self._settle(
            self._queue._hand_back(self._message, untried), 2 * HAND_BACK_TIMEOUT_SECONDS + 1
        )

    def in_progress(self) -> None:
        # Fire and forget: called from the download watchdog, which must never wait on NATS.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._message.in_progress(), self._queue._loop)
