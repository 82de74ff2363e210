-- StackBox store, schema version 3, SQLite's part (runs before 0003_backups.sql, in the same
-- transaction): deployments.kind accepts the backup kinds.
--
-- SQLite cannot change a CHECK constraint, so the table is rebuilt. The journal's foreign keys
-- are on and cannot be turned off inside the migration's transaction (PRAGMA foreign_keys is a
-- no-op there), and dropping `deployments` while `deployment_steps` references it would run
-- its ON DELETE CASCADE and empty the steps. So both tables are copied aside first, the child
-- is dropped before the parent, both are created again and refilled parent first. The two
-- definitions below are 0001's, with only the kinds widened; the indexes dropped with the
-- tables are created again as 0001 made them. Never edit this file once released.

CREATE TABLE deployments_before_v3 AS SELECT * FROM deployments;
CREATE TABLE deployment_steps_before_v3 AS SELECT * FROM deployment_steps;

DROP TABLE deployment_steps;
DROP TABLE deployments;

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('create', 'redeploy', 'stop', 'start', 'destroy',
        'backup', 'restore', 'verify', 'clone')),
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'compensated')),
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT
);

CREATE INDEX deployments_by_client ON deployments (client_id, id);
CREATE UNIQUE INDEX deployments_one_unfinished_per_client ON deployments (client_id)
    WHERE status IN ('pending', 'running');
CREATE INDEX deployments_by_finish ON deployments (finished_at);

CREATE TABLE deployment_steps (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    attempts BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    output TEXT,
    PRIMARY KEY (deployment_id, name),
    UNIQUE (deployment_id, position)
);

CREATE INDEX deployment_steps_by_finish ON deployment_steps (finished_at);

INSERT INTO deployments (id, client_id, kind, status, created_at, started_at, finished_at, error)
    SELECT id, client_id, kind, status, created_at, started_at, finished_at, error
    FROM deployments_before_v3;
INSERT INTO deployment_steps (deployment_id, position, name, status, attempts, started_at,
        finished_at, error, output)
    SELECT deployment_id, position, name, status, attempts, started_at, finished_at, error,
        output
    FROM deployment_steps_before_v3;

DROP TABLE deployment_steps_before_v3;
DROP TABLE deployments_before_v3;
