"""Per-model dynamic batcher.

Requests queue as row blocks (a feed of arrays with ``rows`` leading rows). One loop per
model takes, whenever the model has a free slot (one compute thread per slot; several slots:
concurrent calls on one ONNX Runtime session; the lowest free slot first, so a lone request
always runs on the same warm thread), everything queued up to ``max_batch_size`` rows
(optionally after waiting ``max_queue_delay`` for more), stacks it (padding inputs of
different lengths), runs the model in the model's compute thread and hands each caller a
view of exactly its own rows (with padded dimensions cut back to its own length). A lone
batch that the model's recent calls say ends within ``inline_call_s`` runs on the event loop
itself instead (a small model at low load saves two thread hops).

- The queue is bounded: beyond ``max_queue_size`` waiting requests, ``submit`` raises
  Unavailable at once.
- The wait is bounded too, two ways. On arrival, when the rows already waiting (queued or
  being decoded) are more than the model's slots get through in ``max_queue_wait`` at the
  pace of its recent calls (never fewer than one full batch), the newcomer would wait longer
  and is refused at once. And CoDel's test (Nichols & Jacobson 2012) catches what that
  estimate misses: when every request the model started during the last ``WAIT_WINDOW_S``
  had waited longer than ``max_queue_wait`` since its admission, a standing queue has formed
  and new arrivals are refused until a request gets through faster again. A burst the model
  gets through in time is absorbed; a sustained overload is refused in milliseconds instead
  of answered seconds late.
- A request whose deadline passes while queued is answered DeadlineExceeded by a timer and
  never reaches the model; a cancelled caller's request leaves the queue.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np

from serving import tracing
from serving.errors import DeadlineExceeded, InternalError, InvalidInput, Unavailable
from serving.metrics import ModelMetrics
from serving.statistics import InferenceStatistics, RequestTimes
from serving.types import Feed

WAIT_WINDOW_S = 0.1
"""The window over which the smallest admission-to-model wait is judged (CoDel's interval)."""

PredictFn = Callable[[Feed], dict[str, np.ndarray]]


@dataclass(slots=True, eq=False)
class _Pending:
    feed: Feed
    rows: int
    future: asyncio.Future[Feed]
    enqueued: float
    deadline: float
    admitted: float
    timer: asyncio.TimerHandle | None = None
    taken: bool = False
    times: RequestTimes | None = None
    """Filled in for the caller: its queue wait and its batch's model time (statistics)."""
    trace: tracing.Queued | None = None
    """The request's spans while tracing is on (serving/tracing.py)."""


@dataclass(slots=True)
class BatchPolicy:
    max_batch_size: int
    max_queue_delay: float
    max_queue_size: int
    max_queue_wait: float = 0.0
    """Seconds from admission to the model beyond which a standing queue refuses arrivals (0: off)."""
    inline_call_s: float = 0.0
    """A lone batch expected to take less runs on the event loop, not in a compute thread (0: never)."""
    pad_values: Mapping[str, int | float] = field(default_factory=dict)
    """Fill value per input when rows of different lengths are stacked (default 0)."""
    dynamic_output_dims: Mapping[str, Sequence[int]] = field(default_factory=dict)
    """Per output, the non-batch dims that follow the padded length (cut back per caller)."""
    pad: bool = True
    """Requests of different lengths share a batch (padded); False: only requests whose
    non-batch shapes agree are joined (a generic tensor model's inputs are never padded)."""


class Batcher:
    def __init__(
        self,
        predict: PredictFn,
        policy: BatchPolicy,
        metrics: ModelMetrics,
        executors: Executor | Sequence[Executor],
        statistics: InferenceStatistics | None = None,
    ) -> None:
        """``executors``: one per slot (each should have a single thread); ``statistics``: where
        each executed batch is counted (Triton's statistics extension)."""
        self.predict = predict
        self.statistics = statistics
        self.executors = [executors] if isinstance(executors, Executor) else list(executors)
        self.parallel = len(self.executors)
        self._free: asyncio.PriorityQueue[int] = asyncio.PriorityQueue()  # free slots, lowest first
        for slot in range(self.parallel):
            self._free.put_nowait(slot)
        self._running: set[asyncio.Task[None]] = set()
        self.policy = policy
        self.metrics = metrics
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._admitted = 0
        """Requests admitted on arrival and still being decoded (not yet in the queue)."""
        self._standing = False
        """A standing queue: every request started in the last window waited over max_queue_wait."""
        self._window_min = math.inf
        self._window_end = 0.0
        self._row_seconds = math.inf
        """Model seconds per row over the recent calls (a moving average; unknown before the first)."""

    @property
    def depth(self) -> int:
        return len(self._queue)

    def admit(self) -> float:
        """Count a request against ``max_queue_size`` and the wait bound on arrival, before
        any decoding work; returns the admission time to hand to :meth:`submit`.

        Under overload, surplus requests are refused at once (a few ms) instead of first
        waiting for the preprocessing pool. Pair with :meth:`release` before :meth:`submit`.
        """
        if self._closed:
            raise Unavailable("model is unloading")
        waiting = len(self._queue) + self._admitted
        if waiting >= self.policy.max_queue_size:
            self._refuse_full()
        if self._queued_rows + self._admitted >= self._wait_room():
            self._refuse_wait()
        if self._standing:
            if waiting == 0:  # the queue emptied: whatever stood there is gone
                self._standing = False
            else:
                self._refuse_wait()
        self._admitted += 1
        return time.monotonic()

    def _wait_room(self) -> float:
        """Rows that may wait (queued or being decoded) for the newest to still reach the model
        within ``max_queue_wait``, at the pace of the model's recent calls on all its slots;
        never less than one full batch (no bound while the pace is unknown or the wait is off)."""
        wait = self.policy.max_queue_wait
        if wait <= 0 or not 0 < self._row_seconds < math.inf:
            return math.inf
        return max(self.policy.max_batch_size, self.parallel * wait / self._row_seconds)

    def _refuse_full(self) -> NoReturn:
        self.metrics.rejected("queue_full")
        raise Unavailable(f"queue full ({self.policy.max_queue_size} requests waiting); retry later")

    def _refuse_wait(self) -> NoReturn:
        self.metrics.rejected("queue_full")
        wait_ms = self.policy.max_queue_wait * 1000
        raise Unavailable(f"queue full (requests wait over {wait_ms:.0f} ms to reach the model); retry later")

    def release(self) -> None:
        """The admitted request is decoded (or failed): it no longer holds a queue place."""
        self._admitted -= 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Refuse new work, let queued work finish, then end the loop."""
        self._closed = True
        while self._queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._running, return_exceptions=True)  # batches already running finish

    async def submit(
        self,
        feed: Feed,
        rows: int,
        deadline: float,
        admitted: float | None = None,
        times: RequestTimes | None = None,
    ) -> Feed:
        """Queue ``rows`` rows and wait for this caller's outputs (views of the batch outputs);
        ``admitted``: the time :meth:`admit` returned (default: now); ``times``: gets the queue
        wait and the model time of the batch the rows rode in."""
        policy = self.policy
        if self._closed:
            raise Unavailable("model is unloading")
        if rows > policy.max_batch_size:
            raise InvalidInput(f"batch of {rows} rows exceeds the model's max_batch_size of {policy.max_batch_size}")
        if len(self._queue) >= policy.max_queue_size:
            self._refuse_full()
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if deadline <= now:
            self.metrics.rejected("deadline")
            raise DeadlineExceeded("deadline passed before the request was queued")
        item = _Pending(feed, rows, loop.create_future(), now, deadline, now if admitted is None else admitted)
        item.times = times
        item.timer = loop.call_at(deadline, self._expire, item)  # loop.time() is time.monotonic()
        item.trace = tracing.queued(len(self._queue))
        self._queue.append(item)
        self._queued_rows += rows
        self.metrics.queued = len(self._queue)
        self._wakeup.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            # count once: a request whose deadline timer already answered it is not "cancelled" too
            if not item.taken and item.future.cancelled():
                self._remove(item)
                self.metrics.rejected("cancelled")
            raise
        finally:
            item.timer.cancel()
            if item.trace is not None:
                item.trace.left_queue()

    def _remove(self, item: _Pending) -> None:
        try:
            self._queue.remove(item)
        except ValueError:
            return
        self._queued_rows -= item.rows
        self.metrics.queued = len(self._queue)

    def _expire(self, item: _Pending) -> None:
        if item.taken or item.future.done():
            return
        self._remove(item)
        self.metrics.rejected("deadline")
        waited = (time.monotonic() - item.enqueued) * 1000
        item.future.set_exception(DeadlineExceeded(f"deadline passed after {waited:.1f} ms in the queue"))

    async def _loop(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            slot = await self._free.get()  # a batch forms only when the model can run it
            try:
                await self._maybe_wait_for_more()
                batch = self._take()
            except BaseException:
                self._free.put_nowait(slot)
                raise
            if not batch:
                self._free.put_nowait(slot)
                continue
            task = asyncio.get_running_loop().create_task(self._run_in_slot(batch, slot))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_in_slot(self, batch: list[_Pending], slot: int) -> None:
        try:
            await self._run(batch, self.executors[slot])
        finally:
            self._free.put_nowait(slot)

    async def _maybe_wait_for_more(self) -> None:
        delay = self.policy.max_queue_delay
        if delay <= 0:
            return
        until = self._queue[0].enqueued + delay
        while self._queue and self._queued_rows < self.policy.max_batch_size:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # expired or cancelled meanwhile
                self._queue.popleft()
                self._queued_rows -= item.rows
                continue
            if rows + item.rows > self.policy.max_batch_size:
                break
            if batch and not self.policy.pad and not _same_tails(batch[0].feed, item.feed):
                break
            self._queue.popleft()
            self._queued_rows -= item.rows
            item.taken = True
            rows += item.rows
            self.metrics.queue_seconds.observe(now - item.enqueued)
            if item.times is not None:
                item.times.queue = round((now - item.enqueued) * 1e9)
            self._window_min = min(self._window_min, now - item.admitted)
            batch.append(item)
        if now >= self._window_end and self._window_min < math.inf:
            wait_limit = self.policy.max_queue_wait
            self._standing = wait_limit > 0 and self._window_min > wait_limit
            self._window_min = math.inf
            self._window_end = now + WAIT_WINDOW_S
        self.metrics.queued = len(self._queue)
        return batch

    def _runs_inline(self, rows: int) -> bool:
        """Run this batch on the event loop: it is alone (nothing queued, no other batch
        running) and the model's recent calls say it ends within ``inline_call_s``, so
        blocking the loop for it delays nobody by more than that and saves two thread hops.
        The batch still forms in the batcher's own task, after the loop has taken whatever
        else arrived meanwhile (running a lone request straight from ``submit`` instead cut
        batches short under load)."""
        return not self._queue and len(self._running) <= 1 and rows * self._row_seconds < self.policy.inline_call_s

    async def _run(self, batch: list[_Pending], executor: Executor) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        span = tracing.start_batch(batch)  # None unless tracing is on
        rows = sum(item.rows for item in batch)
        try:
            if self._runs_inline(rows):
                results = self._compute(batch)
            else:
                results = await loop.run_in_executor(executor, self._compute, batch)
        except Exception as exc:
            tracing.end_batch(span, exc)
            error = InternalError(f"model call failed for a batch of {len(batch)} request(s): {exc!r}")
            error.__cause__ = exc  # logged once, at the transport that answers each caller
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            self.metrics.compute_seconds.observe(time.perf_counter() - start)
        tracing.end_batch(span)
        seconds = time.perf_counter() - start
        infer_ns = round(seconds * 1e9)
        per_row = seconds / rows
        self._row_seconds = per_row if self._row_seconds == math.inf else 0.8 * self._row_seconds + 0.2 * per_row
        self.metrics.batch_size.observe(rows)
        if self.statistics is not None:
            self.statistics.batch_executed(rows, 0, infer_ns, 0)
        for item, outputs in zip(batch, results, strict=True):
            if item.times is not None:
                item.times.compute_infer = infer_ns
            if not item.future.done():
                item.future.set_result(outputs)

    def _compute(self, batch: list[_Pending]) -> list[Feed]:
        """Stack, predict, split (runs in the compute thread)."""
        if len(batch) == 1:
            return [self.predict(batch[0].feed)]
        feed, padded_len = stack_rows([item.feed for item in batch], self.policy.pad_values)
        outputs = self.predict(feed)
        results: list[Feed] = []
        offset = 0
        for item in batch:
            own_len = _seq_len(item.feed)
            mine: Feed = {}
            for name, array in outputs.items():
                part = array[offset : offset + item.rows]
                if padded_len is not None and own_len is not None and own_len != padded_len:
                    part = self._cut(name, part, padded_len, own_len)
                mine[name] = part
            results.append(mine)
            offset += item.rows
        return results

    def _cut(self, name: str, part: np.ndarray, padded_len: int, own_len: int) -> np.ndarray:
        index: list[slice] = [slice(None)] * part.ndim
        for dim in self.policy.dynamic_output_dims.get(name, ()):
            if dim < part.ndim and part.shape[dim] == padded_len:
                index[dim] = slice(0, own_len)
        return part[tuple(index)]


def stack_rows(feeds: Sequence[Feed], pad_values: Mapping[str, int | float]) -> tuple[Feed, int | None]:
    """Join row blocks into one batch: blocks of equal shape are concatenated; blocks of
    different lengths are right-padded (with ``pad_values[name]``, default 0) to the longest.
    Returns the batch and the padded length (None when nothing was padded)."""
    feed: Feed = {}
    padded_len: int | None = None
    for name in feeds[0]:
        arrays = [f[name] for f in feeds]
        tail = arrays[0].shape[1:]
        if all(a.shape[1:] == tail for a in arrays):
            feed[name] = np.concatenate(arrays)  # (rows, ...)
            continue
        max_tail = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
        total = sum(a.shape[0] for a in arrays)
        out = np.full((total, *max_tail), pad_values.get(name, 0), dtype=arrays[0].dtype)
        offset = 0
        for a in arrays:  # copy each block into the top-left corner of its rows
            out[(slice(offset, offset + a.shape[0]), *(slice(0, d) for d in a.shape[1:]))] = a
            offset += a.shape[0]
        feed[name] = out  # (rows, max_len, ...)
        padded_len = max_tail[0]
    return feed, padded_len


def _same_tails(a: Feed, b: Feed) -> bool:
    """The two row blocks agree on every non-batch dimension of every input."""
    return all(a[name].shape[1:] == b[name].shape[1:] for name in a)


def _seq_len(feed: Feed) -> int | None:
    first = next(iter(feed.values()))
    return first.shape[1] if first.ndim > 1 else None
