"""The log throttle that keeps a broker outage from flooding the worker's log (pure)."""

from __future__ import annotations

import io
import logging

from monitor.logs import Throttle, throttle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_within_the_window_are_held_back_and_counted_on_the_next_one_let_through() -> None:
    clock = Clock()
    f = Throttle(window_s=10.0, clock=clock)
    assert f.filter(record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused"))
    for t in range(1, 8):
        clock.now = float(t)
        assert not f.filter(record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused"))
    clock.now = 12.0
    r = record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
    assert f.filter(r)
    assert r.getMessage() == "Unable connect to node with id 1: refused (and 7 more like it in the last 12 s)"
    clock.now = 30.0
    r = record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused")
    assert f.filter(r) and r.getMessage() == "Unable connect to node with id 1: refused"  # nothing held since


def test_kinds_are_told_apart_by_logger_level_and_template() -> None:
    f = Throttle(window_s=10.0, clock=Clock())
    assert f.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
    assert f.filter(record("aiokafka", "Unable connect to node with id %s: %s", 1, "x"))
    assert f.filter(record("aiokafka.consumer.fetcher", "Unable to update metadata from %s", [1]))
    assert f.filter(record("aiokafka", "Unable to update metadata from %s", [1], level=logging.WARNING))
    assert not f.filter(record("aiokafka", "Unable to update metadata from %s", [2]))  # same template, other args


def test_other_loggers_are_never_held_back() -> None:
    f = Throttle(window_s=10.0, clock=Clock())
    for _ in range(5):
        assert f.filter(record("monitor.events", "PostgreSQL write failed, retrying in %.0f s: %s", 1.0, "down"))
        assert f.filter(record("aiokafkaesque", "not ours"))


def test_every_handler_of_the_logger_gets_the_same_records() -> None:
    clock = Clock()
    logger = logging.Logger("throttle-test")
    outs = [io.StringIO(), io.StringIO()]
    for out in outs:
        logger.addHandler(logging.StreamHandler(out))
    throttle(logger)
    for handler in logger.handlers:
        (f,) = handler.filters
        f.clock = clock
    child = logging.Logger("aiokafka.client")
    child.parent = logger
    for _ in range(50):
        child.error("Unable to update metadata from %s", [1])
    clock.now = 11.0
    child.error("Unable to update metadata from %s", [1])
    want = "Unable to update metadata from [1]\nUnable to update metadata from [1] (and 49 more like it in the last 11 s)\n"
    assert [out.getvalue() for out in outs] == [want, want]
