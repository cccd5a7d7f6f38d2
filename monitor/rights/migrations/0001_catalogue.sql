-- castwatch rights database, first version: catalogue, rights-holders,
-- stations, licences, fingerprints, detections and infringements.
-- Applied by `castwatch db migrate` inside one transaction.

CREATE TABLE holders (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A recording in the catalogue. Removing it from the catalogue keeps the row
-- (detections and reports still name it) and deletes its fingerprints.
CREATE TABLE tracks (
    id              serial PRIMARY KEY,
    isrc            text CHECK (isrc ~ '^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$'),
    title           text NOT NULL,
    artist          text NOT NULL DEFAULT '',
    duration_s      double precision NOT NULL CHECK (duration_s > 0),
    content_sha256  bytea NOT NULL UNIQUE CHECK (length(content_sha256) = 32),
    source          text NOT NULL,
    added_at        timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);
CREATE INDEX tracks_isrc ON tracks (isrc) WHERE isrc IS NOT NULL;

-- Who owns what share of a recording, where. Territory: ISO 3166-1 alpha-2
-- code, or 'WW' for worldwide.
CREATE TABLE ownership (
    track_id    integer NOT NULL REFERENCES tracks ON DELETE CASCADE,
    holder_id   integer NOT NULL REFERENCES holders ON DELETE RESTRICT,
    territory   text NOT NULL DEFAULT 'WW' CHECK (territory ~ '^[A-Z]{2}$'),
    share       numeric(5, 2) NOT NULL CHECK (share > 0 AND share <= 100),
    PRIMARY KEY (track_id, holder_id, territory)
);
CREATE INDEX ownership_holder ON ownership (holder_id);

-- A monitored stream. Its id is the Kafka message key of its audio chunks.
CREATE TABLE streams (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    name        text NOT NULL,
    licensee    text NOT NULL CHECK (licensee <> ''),
    territory   text NOT NULL CHECK (territory ~ '^[A-Z]{2}$'),
    timezone    text NOT NULL DEFAULT 'UTC',
    source_url  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX streams_licensee ON streams (licensee);

-- Permission for a licensee to broadcast: everything of a holder (blanket) or
-- one recording (per-track; holder_id, when given, limits it to that holder's
-- share). Valid on [valid_from, valid_until) and, once revoked, before
-- revoked_at only.
CREATE TABLE licences (
    id           serial PRIMARY KEY,
    licensee     text NOT NULL CHECK (licensee <> ''),
    kind         text NOT NULL CHECK (kind IN ('blanket', 'per-track')),
    holder_id    integer REFERENCES holders ON DELETE RESTRICT,
    track_id     integer REFERENCES tracks ON DELETE CASCADE,
    territories  text[] NOT NULL CHECK (cardinality(territories) > 0),
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz,
    revoked_at   timestamptz,
    note         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'blanket' AND holder_id IS NOT NULL AND track_id IS NULL)
        OR (kind = 'per-track' AND track_id IS NOT NULL)),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX licences_licensee ON licences (licensee);

-- Fingerprints: one row per recording holding its postings as packed
-- little-endian arrays (keys uint32, frames uint32 sorted ascending, spans
-- uint8, pitches uint8). About 10 bytes per posting, no per-posting row or
-- index: matching runs in memory, so nothing looks a hash up in SQL, and a
-- row per posting would cost ~70 bytes with its btree. EXTERNAL storage:
-- hash keys do not compress, so do not try.
CREATE TABLE fingerprints (
    track_id        integer PRIMARY KEY REFERENCES tracks ON DELETE CASCADE,
    params_version  integer NOT NULL,
    n_frames        integer NOT NULL CHECK (n_frames > 0),
    n_postings      integer NOT NULL CHECK (n_postings >= 0),
    keys            bytea NOT NULL CHECK (length(keys) = 4 * n_postings),
    frames          bytea NOT NULL CHECK (length(frames) = 4 * n_postings),
    spans           bytea NOT NULL CHECK (length(spans) = n_postings),
    pitches         bytea NOT NULL CHECK (length(pitches) = n_postings)
);
ALTER TABLE fingerprints
    ALTER COLUMN keys SET STORAGE EXTERNAL,
    ALTER COLUMN frames SET STORAGE EXTERNAL,
    ALTER COLUMN spans SET STORAGE EXTERNAL,
    ALTER COLUMN pitches SET STORAGE EXTERNAL;

-- One play of a recording on a stream. event_id is derived from (stream,
-- track, play start) by the worker, so reprocessing upserts the same row.
CREATE TABLE detections (
    event_id     uuid PRIMARY KEY,
    stream_id    text NOT NULL REFERENCES streams ON DELETE RESTRICT,
    track_id     integer NOT NULL REFERENCES tracks ON DELETE RESTRICT,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    ref_start_s  double precision NOT NULL,
    ref_end_s    double precision,
    score        real NOT NULL,
    speed        real NOT NULL,
    licensed     boolean NOT NULL,
    state        text NOT NULL CHECK (state IN ('started', 'ended')),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX detections_stream_time ON detections (stream_id, started_at);
CREATE INDEX detections_track_time ON detections (track_id, started_at);

CREATE TABLE infringements (
    detection_id  uuid PRIMARY KEY REFERENCES detections ON DELETE CASCADE,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    note          text NOT NULL DEFAULT '',
    updated_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX infringements_open ON infringements (created_at) WHERE status = 'open';

-- Change notification for running workers. Every change to the set of
-- fingerprints bumps the catalogue generation and notifies
-- 'castwatch_catalogue' with "+ID" (added) or "-ID" (removed); every change
-- to what decides licensing notifies 'castwatch_licences'.
CREATE TABLE catalogue_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    catalogue_id  uuid NOT NULL DEFAULT gen_random_uuid(),  -- names this database's caches
    generation    bigint NOT NULL DEFAULT 0
);
INSERT INTO catalogue_state DEFAULT VALUES;

CREATE FUNCTION castwatch_fingerprints_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalogue_state SET generation = generation + 1;
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('castwatch_catalogue', '+' || NEW.track_id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('castwatch_catalogue', '-' || OLD.track_id);
    ELSE
        PERFORM pg_notify('castwatch_catalogue', '-' || OLD.track_id);
        PERFORM pg_notify('castwatch_catalogue', '+' || NEW.track_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER fingerprints_changed AFTER INSERT OR UPDATE OR DELETE ON fingerprints
    FOR EACH ROW EXECUTE FUNCTION castwatch_fingerprints_changed();

CREATE FUNCTION castwatch_licensing_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('castwatch_licences', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER licences_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON licences
    FOR EACH STATEMENT EXECUTE FUNCTION castwatch_licensing_changed();
CREATE TRIGGER ownership_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ownership
    FOR EACH STATEMENT EXECUTE FUNCTION castwatch_licensing_changed();
CREATE TRIGGER streams_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON streams
    FOR EACH STATEMENT EXECUTE FUNCTION castwatch_licensing_changed();
CREATE TRIGGER holders_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON holders
    FOR EACH STATEMENT EXECUTE FUNCTION castwatch_licensing_changed();
