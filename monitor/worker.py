"""The worker's logic without Kafka: one message in, what to dead-letter, publish and store out.

``Worker.handle`` decodes a chunk, feeds its stream's ``StreamProcessor``
(matching against the live index), and decides each play event's licensing
from the live licence book. It does no Kafka I/O, so the faust app
(``monitor.app``) stays wiring only, and this is tested with a real database
but no broker. Heavy work (Numba kernels release the GIL) runs in a thread
the app hands it to, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fingerprint.index import Index
from fingerprint.matcher import Matcher
from monitor import chunks
from monitor.events import Outgoing, Recording
from monitor.rights.db import Reconnecting
from monitor.rights.licences import LicenceBook
from monitor.stream import Accepted, SequenceError, StreamProcessor

log = logging.getLogger(__name__)


@dataclass
class Handled:
    """The outcome of one message."""

    stream: str | None = None
    dlq_reason: str | None = None  # set: send the message to the dead-letter topic with this reason
    dlq_message: str | None = None
    accepted: Accepted | None = None
    seconds: float = 0.0  # audio in the chunk
    stream_time: float = 0.0  # stream time (s since epoch) after this chunk
    outgoing: list[Outgoing] = field(default_factory=list)
    state: dict[str, object] | None = None  # set: persist with the events (same transaction)


class Recordings:
    """Title, artist and ISRC by track id, read from the database on first use and kept."""

    def __init__(self, url: str) -> None:
        self._db = Reconnecting(url, "castwatch-worker-metadata", autocommit=True)
        self._known: dict[int, Recording] = {}

    def get(self, track_id: int) -> Recording:
        if track_id not in self._known:
            row = self._db.run(
                f"reading recording {track_id}",
                lambda conn: conn.execute("SELECT title, artist, isrc FROM tracks WHERE id = %s", (track_id,)).fetchone(),
            )
            self._known[track_id] = Recording(*row) if row else Recording(f"track {track_id}", "", None)
        return self._known[track_id]

    def close(self) -> None:
        self._db.close()


STATE_EVERY_S = 10.0  # stream time between state saves when nothing else happens (well inside the tracker's 20 s gap)


class Worker:
    def __init__(
        self,
        index: Callable[[], Index],
        book: Callable[[], LicenceBook],
        recordings: Callable[[int], Recording],
        saved_state: Callable[[str], dict[str, object] | None] = lambda stream: None,
    ) -> None:
        self._index = index
        self._book = book
        self._recordings = recordings
        self._saved_state = saved_state
        self._matcher: Matcher | None = None
        self.processors: dict[str, StreamProcessor] = {}
        self._saved_at: dict[str, float] = {}

    def matcher(self) -> Matcher:
        """A matcher over the current index (rebuilt when the catalogue follower swapped it)."""
        index = self._index()
        if self._matcher is None or self._matcher.index is not index:
            self._matcher = Matcher(index)
        return self._matcher

    def _restore(self, stream: str) -> StreamProcessor:
        """The stream's processor from its saved state; a fresh one if there is none or it cannot be read.

        A state this release cannot read (written by an incompatible release,
        or damaged) must not stop the worker for every other stream: the
        stream starts afresh, and its plays in progress are found again (under
        new event ids, as after a gap longer than the tracker bridges).
        """
        saved = self._saved_state(stream)
        if not saved:
            return StreamProcessor(stream, self.matcher)
        try:
            return StreamProcessor.restore(saved, self.matcher)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            log.error("stream %r: its saved state cannot be read (%s: %s); starting it afresh", stream, type(e).__name__, e)
            return StreamProcessor(stream, self.matcher)

    def handle(self, key: bytes | None, value: bytes | None) -> Handled:
        try:
            chunk = chunks.decode(key, value)
        except chunks.ChunkError as e:
            return Handled(dlq_reason=e.reason, dlq_message=str(e))
        processor = self.processors.get(chunk.stream)
        if processor is None:
            processor = self._restore(chunk.stream)
            self.processors[chunk.stream] = processor
        try:
            fed = processor.feed(chunk)
        except SequenceError as e:
            return Handled(chunk.stream, SequenceError.reason, str(e))
        book = self._book()
        outgoing = []
        for event in fed.events:
            track = int(event.play.track)
            decision = book.decide(chunk.stream, track, datetime.fromtimestamp(event.play.started_at, timezone.utc))
            outgoing.append(Outgoing(event, decision, self._recordings(track), processor.end_s))
        state = None
        if fed.accepted is not Accepted.DUPLICATE and (
            outgoing or processor.end_s - self._saved_at.get(chunk.stream, 0.0) >= STATE_EVERY_S
        ):
            state = processor.snapshot()
            self._saved_at[chunk.stream] = processor.end_s
        return Handled(
            chunk.stream, accepted=fed.accepted, seconds=chunk.seconds, stream_time=processor.end_s,
            outgoing=outgoing, state=state,
        )  # fmt: skip
