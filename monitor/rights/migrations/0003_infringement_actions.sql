-- What operators did about infringements (the dashboard's one write), step by
-- step: who, when, what, and their note. infringements.status, updated_by and
-- updated_at hold the latest step; this log keeps every one.
CREATE TABLE infringement_actions (
    id            bigserial PRIMARY KEY,
    detection_id  uuid NOT NULL REFERENCES infringements ON DELETE CASCADE,
    action        text NOT NULL CHECK (action IN ('acknowledge', 'resolve')),
    operator      text NOT NULL CHECK (operator <> ''),
    note          text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX infringement_actions_detection ON infringement_actions (detection_id, at);

-- The dashboard's views: recent detections and plays per hour (by time),
-- what is playing now on each stream (its open play), unresolved
-- infringements (newest first).
CREATE INDEX detections_started ON detections (started_at);
CREATE INDEX detections_playing ON detections (stream_id, started_at) WHERE state = 'started';
CREATE INDEX infringements_unresolved ON infringements (created_at, detection_id) WHERE status <> 'resolved';
