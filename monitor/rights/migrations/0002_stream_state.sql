-- Per-stream worker state that must survive a crash: the play tracker's open
-- plays (with their event ids) and the next expected chunk sequence number.
-- Written in the same transaction as the stream's play events, so after a
-- restart the replayed chunks are recognised as duplicates and open plays
-- continue under the same event ids. No foreign key: unregistered streams
-- are monitored too.
CREATE TABLE stream_state (
    stream_id   text PRIMARY KEY,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Streams are monitored before (or without) being registered: their plays are
-- detections too (unlicensed: no licensee known), so a detection names its
-- stream by id without requiring a row in streams.
ALTER TABLE detections DROP CONSTRAINT detections_stream_id_fkey;
