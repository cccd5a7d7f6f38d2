"""The worker's health checks, as pure functions of what the app knows (served by monitor/app.py).

Liveness (``/livez``): restart me. The web server answers, so the event loop
runs; the check fails only when the worker is *stalled*: chunks wait on its
partitions and it has neither processed a message nor retried the database
for ``stall_seconds``. A worker waiting on a database outage stays alive
(restarting it would not help), and so does an idle one.

Readiness (``/readyz``): I am doing my share. It passes while the worker owns
partitions of the chunk topic or a rebalance is handing them out; a worker
with none (more workers than partitions) is running but not ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str

    @property
    def status(self) -> int:
        return 200 if self.ok else 503


class Progress:
    """When the worker last got anywhere. Updated from the event loop only."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.backlog = 0
        self._clock = clock
        self._since = clock()
        self._store_failures = 0

    def advanced(self) -> None:
        """A message was processed."""
        self._since = self._clock()

    def measured(self, backlog: int, store_failures: int) -> None:
        """The lag on the assigned partitions and the database's failed attempts, measured now."""
        if backlog > 0 and self.backlog == 0:
            self._since = self._clock()  # waiting starts now, not at the last message of a quiet spell
        if store_failures != self._store_failures:
            self._since = self._clock()  # retrying the database is progress: a restart would not help
            self._store_failures = store_failures
        self.backlog = backlog

    def liveness(self) -> Check:
        idle = self._clock() - self._since
        if self.backlog > 0 and idle > self.stall_seconds:
            return Check(
                False,
                f"stalled: {self.backlog} chunks wait and none was processed for {idle:.0f} s"
                f" (CASTWATCH_STALL_SECONDS={self.stall_seconds:g})",
            )
        return Check(True, f"alive: {self.backlog} chunks waiting")


def readiness(running: bool, partitions: int, rebalancing: bool) -> Check:
    """Ready while the worker owns chunk partitions (or a rebalance is handing them out)."""
    if not running:
        return Check(False, "not running")
    if partitions:
        return Check(True, f"ready: {partitions} partitions assigned")
    if rebalancing:
        return Check(True, "ready: rebalancing")
    return Check(False, "no partition assigned (more workers than partitions of the chunk topic?)")
