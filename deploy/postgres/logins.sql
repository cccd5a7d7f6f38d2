-- Login roles of a deployment, each in one group role of roles.sql (run roles.sql first).
-- Passwords come in as psql variables and are updated on every run:
--   psql "$OWNER_URL" -v worker_password="$WORKER_DB_PASSWORD" -v reader_password="$READER_DB_PASSWORD" -f logins.sql
-- deploy/compose.yaml runs it in its `roles` service.

SELECT format('CREATE ROLE castwatch_worker_login LOGIN IN ROLE castwatch_worker')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'castwatch_worker_login') \gexec
SELECT format('CREATE ROLE castwatch_reader_login LOGIN IN ROLE castwatch_reader')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'castwatch_reader_login') \gexec
ALTER ROLE castwatch_worker_login PASSWORD :'worker_password';
ALTER ROLE castwatch_reader_login PASSWORD :'reader_password';
