"""When and where forecasters refit: inline (backtests) or on one background worker (live).

A refit is the expensive part of a forecaster: `auto` on a week of 1-minute bins takes about
0.4 s, and `predictive` keeps one forecaster per component, so 200 components that come due on
the same day would stall one control tick for over a minute. `Forecaster.start_refit()` splits a
refit into a cheap snapshot (a clone holding a copy of the history), the fit, which can run
anywhere, and a cheap `adopt()` that replays the bins closed since the snapshot. A
`RefitScheduler` decides where the fit runs:

- `inline`: the fit runs at once, inside the call, and is adopted at once, exactly as a
  blocking `Forecaster.refit()`. Backtests use it: simulated time runs far faster than a fit, so
  a fit finished "in the background" would be adopted at a tick that depends on the machine's
  speed, and results would not reproduce.
- `background`: the fit runs on one worker thread (a single-thread executor: statsmodels
  releases the GIL in parts, and one worker bounds the memory and CPU that refits take); the
  forecaster keeps predicting with its previous model (or its fallback) until a later call finds
  the fit done and adopts it, so a tick never waits for a fit.

Per forecaster there is at most one refit in flight: a forecaster stays due until its refit is
adopted, and asking again meanwhile does nothing (coalescing). At most `max_waiting` refits wait
for the worker at a time, each holding a snapshot (a week of 30 s bins is 20,160 values, about
0.6 MB as the twin's deque); a due forecaster that finds the queue full asks again at its next
tick. Worked numbers: 200 forecasters due together, `max_waiting` 8, 15 s ticks and 0.4 s fits:
8 are queued per tick and fitted in 3.2 s, so the round is done in 25 ticks (about 6 minutes),
with at most 17 snapshots alive at once (8 waiting, 1 fitting, 8 fitted and not yet adopted).

A refit that raises is logged once (a warning; repeats of the same forecaster's failure are at
debug level until one succeeds), the forecaster keeps its model, and it is not tried again
before `refit_every_s` of data time has passed, so a fit that always fails costs one attempt
per refit period, not one per tick. A finished refit is dropped unadopted when its forecaster
has moved past the snapshot in a way replaying cannot follow: its history restarted (a gap
longer than the history) or it was fitted since (its first observation after missing ones).

Time is the data time the caller passes (`now_s`); nothing here reads a clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Literal, TypeVar

from elastiscale.forecasting.base import Forecaster, RefitJob

log = logging.getLogger(__name__)

T = TypeVar("T")

RefitMode = Literal["inline", "background"]
REFIT_MODES: tuple[RefitMode, ...] = ("inline", "background")

#: Refits waiting for the worker at most (see the module docstring for the arithmetic).
DEFAULT_MAX_WAITING = 8


@dataclass(slots=True)
class _Slot:
    """What the scheduler keeps about one forecaster."""

    forecaster: Forecaster
    future: Future[RefitJob] | None = None
    requested_at_s: float = 0.0
    retry_at_s: float | None = None  # after a failure: no new refit before this data time
    failing: bool = False  # the last attempt failed (its warning has been logged)


class RefitScheduler:
    """Runs the refits of any number of forecasters, inline or on one background worker.

    Use, once per new observation of a forecaster (`t_s`: the observation's data time):

        forecaster.update(t_s, value)
        refits.maintain(forecaster, t_s)   # adopt a finished refit; start one when due

    and `collect(forecaster)` before predicting, so a finished refit is used even while no new
    data arrives. `close()` stops the worker (the daemon calls it through the policy's own
    `close()` when it stops or reloads).
    """

    def __init__(
        self,
        mode: RefitMode = "background",
        *,
        max_waiting: int = DEFAULT_MAX_WAITING,
        thread_name: str = "elastiscale-refit",
    ) -> None:
        if mode not in REFIT_MODES:
            raise ValueError(f"refit mode = {mode!r}: must be one of {', '.join(REFIT_MODES)}")
        if max_waiting < 1:
            raise ValueError(f"max_waiting = {max_waiting}: must be at least 1")
        self.mode: RefitMode = mode
        self.max_waiting = max_waiting
        self._thread_name = thread_name
        self._slots: dict[int, _Slot] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._queue_room = threading.BoundedSemaphore(max_waiting)
        self._closed = False
        #: Counts since creation, for tests, benchmarks and logs.
        self.started = 0
        self.adopted = 0
        self.failed = 0
        self.dropped = 0

    # ----------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self, forecaster: Forecaster) -> bool:
        """Whether a refit of `forecaster` is queued, running, or finished but not adopted."""
        slot = self._find(forecaster)
        return slot is not None and slot.future is not None

    def in_flight(self) -> int:
        """Refits queued, running, or finished but not adopted, over all forecasters."""
        return sum(1 for slot in self._slots.values() if slot.future is not None)

    def maintain(self, forecaster: Forecaster, now_s: float) -> None:
        """Adopt a finished refit of `forecaster`, then start one if it is due at `now_s`.

        Inline, a due refit is fitted and adopted before this returns; in the background it is
        only queued (or, with a full queue, left for a later call)."""
        self.collect(forecaster)
        if not forecaster.refit_due(now_s):
            return
        slot = self._slot(forecaster)
        if slot.future is not None:
            return  # one refit of this forecaster is in flight already: coalesced
        if slot.retry_at_s is not None and now_s < slot.retry_at_s:
            return  # the last attempt failed; wait out the refit period
        if self.mode == "inline":
            self._run_inline(slot, now_s)
        else:
            self._submit(slot, now_s)

    def submit(self, task: Callable[[], T]) -> Future[T]:
        """Run `task` where refits run: inline, at once (the future is done on return); in
        the background, on the same worker after the refits queued before it. For other work
        off the tick (a policy's self-calibration); a closed scheduler runs nothing (the
        future is cancelled)."""
        future: Future[T] = Future()
        if self.mode == "inline":
            try:
                future.set_result(task())
            except Exception as exc:  # reported through the future, as on the worker
                future.set_exception(exc)
            return future
        if self._closed:
            future.cancel()
            return future
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        return self._executor.submit(task)

    def collect(self, forecaster: Forecaster) -> bool:
        """Adopt `forecaster`'s refit if it has finished; True when a model was adopted."""
        slot = self._find(forecaster)
        if slot is None or slot.future is None or not slot.future.done():
            return False
        future, slot.future = slot.future, None
        if future.cancelled():
            return False
        error = future.exception()
        if error is not None:
            self._failed(slot, error)
            return False
        return self._adopt(slot, future.result())

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every refit in flight has finished running (not adopted: `collect` does
        that); True when none is left running. For tests and orderly stops, never a tick."""
        # A future cancelled by `close()` never counts as done for `concurrent.futures.wait`.
        futures = [
            s.future
            for s in self._slots.values()
            if s.future is not None and not s.future.cancelled()
        ]
        if not futures:
            return True
        _, not_done = wait_futures(futures, timeout=timeout_s)
        return not not_done

    def close(self, *, wait: bool = False) -> None:
        """Stop the worker: refits still queued are cancelled, and a fit already running
        finishes on its own (with `wait`, this call waits for it). Afterwards no background
        refit is started; forecasters keep the models they have. Inline refits need no worker
        and go on as before."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)
        for slot in self._slots.values():
            if slot.future is not None and slot.future.cancelled():
                slot.future = None

    # ----------------------------------------------------------------------------------------

    def _find(self, forecaster: Forecaster) -> _Slot | None:
        slot = self._slots.get(id(forecaster))
        return slot if slot is not None and slot.forecaster is forecaster else None

    def _slot(self, forecaster: Forecaster) -> _Slot:
        slot = self._find(forecaster)
        if slot is None:
            slot = self._slots[id(forecaster)] = _Slot(forecaster)
        return slot

    def _run_inline(self, slot: _Slot, now_s: float) -> None:
        """The blocking refit, step for step as `Forecaster.refit()`, with failures kept."""
        slot.requested_at_s = now_s
        self.started += 1
        try:
            job = slot.forecaster.start_refit()
            job.run()
        except Exception as exc:  # a fit that raises must not take the policy down
            self._failed(slot, exc)
            return
        self._adopt(slot, job)

    def _submit(self, slot: _Slot, now_s: float) -> None:
        if self._closed:
            return
        if not self._queue_room.acquire(blocking=False):
            return  # the queue is full: still due, asked again at the next call
        slot.requested_at_s = now_s
        try:
            job = slot.forecaster.start_refit()
        except Exception as exc:
            self._queue_room.release()
            self._failed(slot, exc)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        slot.future = self._executor.submit(self._run_job, job)
        self.started += 1

    def _run_job(self, job: RefitJob) -> RefitJob:
        """On the worker: the fit itself (its queue place is free as soon as it starts)."""
        self._queue_room.release()
        job.run()
        return job

    def _adopt(self, slot: _Slot, job: RefitJob) -> bool:
        forecaster = slot.forecaster
        stale = _stale(forecaster, job.forecaster)
        if stale is not None:
            self.dropped += 1
            log.debug("refit of forecaster %s dropped: %s", forecaster.name, stale)
            return False
        try:
            forecaster.adopt(job)
        except Exception as exc:
            self._failed(slot, exc)
            return False
        self.adopted += 1
        slot.retry_at_s = None
        if slot.failing:
            slot.failing = False
            log.info("refit of forecaster %s succeeded again", forecaster.name)
        return True

    def _failed(self, slot: _Slot, error: BaseException) -> None:
        self.failed += 1
        forecaster = slot.forecaster
        period_s = float(forecaster.params.refit_every_s)
        slot.retry_at_s = slot.requested_at_s + period_s
        level = logging.DEBUG if slot.failing else logging.WARNING
        slot.failing = True
        log.log(
            level,
            "refit of forecaster %s failed (%s: %s); it keeps its previous model and tries "
            "again after %g s of data",
            forecaster.name,
            type(error).__name__,
            error,
            period_s,
        )


def _stale(live: Forecaster, twin: Forecaster) -> str | None:
    """Why `twin`, fitted on a snapshot of `live`, must not replace `live`'s model, or None.

    - `live` restarted its history since the snapshot (after a gap longer than the history it
      keeps only what came later, so its newest bin is further ahead of the snapshot's than its
      history is long): the snapshot describes a past that is gone.
    - `live` was fitted after the snapshot was taken (its first observation after a history
      of missing values is fitted at once, inline): its model is newer than the twin's.
    Neither happens inline, where the snapshot is taken, fitted and adopted in one call.
    """
    t_live, y_live = live.history()
    t_twin, _ = twin.history()
    if not t_twin.size or not t_live.size:
        return "its history restarted since the snapshot"
    behind = round((float(t_live[-1]) - float(t_twin[-1])) / live.step_s)
    if not 0 <= behind <= y_live.size:
        return "its history restarted since the snapshot"
    fitted_at_s = live.status.fitted_at_s
    if fitted_at_s is not None and fitted_at_s > float(t_twin[-1]) + live.step_s + 1e-9:
        return "it was fitted again since the snapshot"
    return None
