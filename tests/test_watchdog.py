"""The consumer watchdog's decision (pure); the restart itself is exercised by the broker-restart end-to-end test."""

from __future__ import annotations

from monitor.watchdog import Stall


def test_waiting_messages_without_committed_progress_is_a_stall_after_the_limit() -> None:
    stall = Stall(stall_after_s=30.0)
    assert stall.observe(0.0, {0: 5}, {0: 8}, busy=False) is None
    assert stall.observe(20.0, {0: 5}, {0: 9}, busy=False) is None
    assert stall.observe(30.0, {0: 5}, {0: 9}, busy=False) == 30.0
    assert stall.observe(41.0, {0: 5}, {0: 9}, busy=False) == 41.0


def test_progress_resets_the_clock() -> None:
    stall = Stall(stall_after_s=30.0)
    stall.observe(0.0, {0: 5}, {0: 8}, busy=False)
    assert stall.observe(25.0, {0: 6}, {0: 8}, busy=False) is None
    assert stall.observe(50.0, {0: 6}, {0: 8}, busy=False) is None  # 25 s since the commit moved
    assert stall.observe(55.0, {0: 6}, {0: 8}, busy=False) == 30.0


def test_nothing_waiting_is_no_stall_however_long() -> None:
    stall = Stall(stall_after_s=30.0)
    for now in (0.0, 60.0, 600.0):
        assert stall.observe(now, {0: 8, 1: 3}, {0: 8, 1: 3}, busy=False) is None
    assert stall.observe(601.0, {0: 8, 1: 3}, {0: 8, 1: 4}, busy=False) is None  # a new message: the clock starts now
    assert stall.observe(630.0, {0: 8, 1: 3}, {0: 8, 1: 4}, busy=False) is None
    assert stall.observe(631.0, {0: 8, 1: 3}, {0: 8, 1: 4}, busy=False) == 30.0


def test_a_busy_agent_is_not_stalled() -> None:
    """A database outage keeps the agent storing (on purpose): that is not the consumer's fault."""
    stall = Stall(stall_after_s=30.0)
    for now in range(0, 300, 5):
        assert stall.observe(float(now), {0: 5}, {0: 50}, busy=True) is None
    assert stall.observe(305.0, {0: 5}, {0: 50}, busy=False) is None
    assert stall.observe(325.0, {0: 5}, {0: 50}, busy=False) == 30.0  # from the last time it was seen busy


def test_a_partition_never_committed_counts_from_zero() -> None:
    stall = Stall(stall_after_s=10.0)
    assert stall.observe(0.0, {}, {3: 2}, busy=False) is None
    assert stall.observe(10.0, {}, {3: 2}, busy=False) == 10.0
    assert stall.observe(11.0, {3: 2}, {3: 2}, busy=False) is None


def test_no_partitions_held_is_no_stall() -> None:
    stall = Stall(stall_after_s=10.0)
    assert stall.observe(0.0, {}, {}, busy=False) is None
    assert stall.observe(100.0, {}, {}, busy=False) is None
