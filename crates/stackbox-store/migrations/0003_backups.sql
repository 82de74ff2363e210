-- StackBox store, schema version 3: backups, verified restores and clones.
--
-- Runs on both engines after its engine's companion (0003_backups.sqlite.sql or
-- 0003_backups.postgres.sql), which widens deployments.kind. Same rules as 0001: times as
-- BIGINT milliseconds since the Unix epoch (UTC), bytes as BYTEA. Never edit this file once
-- released.

-- What a deployment was asked to do beyond its kind (JSON), such as the snapshot a restore
-- brings back or the client a clone becomes. NULL for the kinds that need nothing.
ALTER TABLE deployments ADD COLUMN params TEXT;

-- Each client's backup repository key, sealed with the master key like secrets (format byte,
-- nonce, ciphertext and tag) but with associated data of its own. No foreign key to clients:
-- a destroyed client's backups are kept for their retention period, and without the key they
-- could not be read.
CREATE TABLE backup_keys (
    client_id TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every backup run and what came of it. No foreign keys, for the same reason: the rows of a
-- destroyed client stay until its retention ends (see retained_clients).
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    -- The deployment whose step made it, if any.
    deployment_id TEXT,
    reason TEXT NOT NULL CHECK (reason IN ('manual', 'scheduled', 'safety', 'pre-destroy')),
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    -- The repository's snapshot id, once it succeeded.
    snapshot_id TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    error TEXT,
    -- What the snapshot holds (JSON).
    manifest TEXT,
    bytes_added BIGINT,
    bytes_total BIGINT,
    files_total BIGINT,
    -- The last restore test of this snapshot: when, whether it passed (0 or 1), and why not.
    verified_at BIGINT,
    verify_ok BIGINT CHECK (verify_ok IN (0, 1)),
    verify_error TEXT,
    -- When the snapshot was removed from the repository by retention.
    forgotten_at BIGINT,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status <> 'succeeded' OR snapshot_id IS NOT NULL),
    CHECK ((verified_at IS NULL) = (verify_ok IS NULL))
);

CREATE INDEX backups_by_client ON backups (client_id, started_at);
-- What a resumed backup step looks for: the row its interrupted run started.
CREATE INDEX backups_by_deployment ON backups (deployment_id);

-- Destroyed clients whose backups are kept: enough to restore them (the configuration) and
-- when their backups, backup key and this row are removed.
CREATE TABLE retained_clients (
    client_id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    -- The configuration as ClientSpec::to_toml rendered it (with client_id).
    spec TEXT NOT NULL,
    destroyed_at BIGINT NOT NULL,
    retain_until BIGINT NOT NULL
);

CREATE INDEX retained_clients_by_due ON retained_clients (retain_until);
