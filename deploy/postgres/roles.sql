-- Least-privilege roles for a castwatch database. Run once per database as
-- its owner (or a superuser), after `castwatch db migrate`, for example:
--   psql "$OWNER_URL" -f deploy/postgres/roles.sql
-- then give each login role one group role:
--   CREATE ROLE worker_a LOGIN PASSWORD '...' IN ROLE castwatch_worker;
-- Safe to re-run. Migrations run as the owner, never as these roles.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'castwatch_worker') THEN
        CREATE ROLE castwatch_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'castwatch_curator') THEN
        CREATE ROLE castwatch_curator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'castwatch_reader') THEN
        CREATE ROLE castwatch_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'castwatch_dashboard') THEN
        CREATE ROLE castwatch_dashboard NOLOGIN;
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO castwatch_worker, castwatch_curator, castwatch_reader, castwatch_dashboard;

-- Monitoring workers: read the catalogue, fingerprints and licences (and
-- LISTEN for their changes, which needs no grant); write detections and
-- infringements only. They cannot change what is licensed or delete evidence.
GRANT SELECT ON schema_migrations, catalogue_state, holders, tracks, ownership, streams, licences, fingerprints
    TO castwatch_worker;
GRANT SELECT, INSERT, UPDATE ON detections, infringements, stream_state TO castwatch_worker;

-- Catalogue curators (`castwatch catalog|holders|streams|licences`): manage
-- the catalogue and licences; read detections; acknowledge infringements.
GRANT SELECT ON schema_migrations, detections TO castwatch_curator;
GRANT SELECT, INSERT, UPDATE, DELETE ON holders, tracks, ownership, streams, licences, fingerprints
    TO castwatch_curator;
GRANT SELECT, UPDATE ON catalogue_state TO castwatch_curator;  -- the fingerprints trigger bumps the generation
GRANT SELECT, UPDATE ON infringements TO castwatch_curator;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO castwatch_curator;

-- Reports and other read-only tools: read everything, write nothing.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO castwatch_reader;

-- The live dashboard (`castwatch dashboard`): a reader that may do one thing,
-- acknowledge or resolve an infringement, recorded with who and when. It can
-- change no other column of infringements and nothing else at all.
GRANT castwatch_reader TO castwatch_dashboard;
GRANT UPDATE (status, note, updated_by, updated_at) ON infringements TO castwatch_dashboard;
GRANT INSERT ON infringement_actions TO castwatch_dashboard;
GRANT USAGE ON SEQUENCE infringement_actions_id_seq TO castwatch_dashboard;
