-- StackBox store, schema version 1.
--
-- This one file runs unchanged on SQLite and on PostgreSQL, so it keeps to what both accept:
-- TEXT, BIGINT (SQLite gives it INTEGER affinity), BYTEA (PostgreSQL's binary type; SQLite
-- accepts the name and stores blobs as they are), CHECK constraints, partial indexes and
-- ON DELETE CASCADE. Times are BIGINT milliseconds since the Unix epoch (UTC).
-- Never edit a released migration: add the next file instead (the runner refuses a database
-- whose applied migrations differ from the embedded ones).

CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL UNIQUE,
    company_name TEXT NOT NULL,
    plan TEXT NOT NULL,
    -- The configuration as ClientSpec::to_toml renders it.
    spec TEXT NOT NULL,
    -- No CHECK: the set of states grows with the health monitor (see ClientState).
    state TEXT NOT NULL,
    state_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Keyset pagination walks one of these in id order (the primary key's index when unfiltered),
-- so a page costs the rows it returns, not a scan of every client.
CREATE INDEX clients_by_state ON clients (state, id);
CREATE INDEX clients_by_plan ON clients (plan, id);
CREATE INDEX clients_by_state_and_plan ON clients (state, plan, id);

CREATE TABLE client_secrets (
    client_id TEXT PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    -- XChaCha20-Poly1305: format byte, nonce, ciphertext and tag (see crypto.rs).
    sealed BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('create', 'redeploy', 'stop', 'start', 'destroy')),
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'compensated')),
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT
);

CREATE INDEX deployments_by_client ON deployments (client_id, id);
-- One unfinished deployment per client, enforced by the database itself: of two concurrent
-- inserts, the second fails, whatever the application checked before.
CREATE UNIQUE INDEX deployments_one_unfinished_per_client ON deployments (client_id)
    WHERE status IN ('pending', 'running');
CREATE INDEX deployments_by_finish ON deployments (finished_at);

CREATE TABLE deployment_steps (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    -- Times the step was started; above 1 means an interrupted run was resumed.
    attempts BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    -- JSON.
    output TEXT,
    PRIMARY KEY (deployment_id, name),
    UNIQUE (deployment_id, position)
);

CREATE INDEX deployment_steps_by_finish ON deployment_steps (finished_at);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    -- SHA-256 of the token; the token itself is never stored.
    hash BYTEA NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'client')),
    client_id TEXT REFERENCES clients (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    CHECK ((role = 'operator' AND client_id IS NULL)
        OR (role = 'client' AND client_id IS NOT NULL))
);

CREATE INDEX tokens_by_client ON tokens (client_id);

-- Small facts about the store itself, such as the master key's fingerprint.
CREATE TABLE store_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
