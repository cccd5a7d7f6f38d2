"""Keep the worker's log readable when a library repeats itself.

While a broker is down, aiokafka logs the same few errors ("Unable connect
to node with id 1", "Unable to update metadata") hundreds of times a
second. ``Throttle`` lets the first of each kind through, holds back the
repeats for ``window_s`` seconds, and says how many it held back on the next
one it lets through: the log still tells when an outage began, that it
lasted, and when it ended, at a few lines a minute instead of megabytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

THROTTLED = ("aiokafka",)  # loggers (and their children) whose repeats are held back
WINDOW_S = 10.0
KINDS = 1000  # kinds remembered at most; beyond, those not seen for a window are forgotten


class Throttle(logging.Filter):
    """Passes one record per (logger, level, message template) every ``window_s`` seconds."""

    def __init__(
        self, prefixes: tuple[str, ...] = THROTTLED, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:  # fmt: skip
        super().__init__()
        self.prefixes = prefixes
        self.window_s = window_s
        self.clock = clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (time let through, repeats held since)

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "castwatch_throttle", None)  # another handler with this filter saw it already
        if decided is None:
            decided = record.castwatch_throttle = self._decide(record)
        return bool(decided)

    def _decide(self, record: logging.LogRecord) -> bool:
        if not any(record.name == p or record.name.startswith(p + ".") for p in self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        passed, held = self._last.get(key, (None, 0))
        if passed is not None and now - passed < self.window_s:
            self._last[key] = (passed, held + 1)
            return False
        if len(self._last) >= KINDS:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.window_s}
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {now - passed:.0f} s)"
        return True


def throttle(logger: logging.Logger) -> None:
    """Adds one ``Throttle`` to every handler of ``logger`` (records of child loggers reach those handlers too).

    Each handler runs its filters on a record; the first to run decides, and
    the record carries the decision to the others.
    """
    shared = Throttle()
    for handler in logger.handlers:
        handler.addFilter(shared)
