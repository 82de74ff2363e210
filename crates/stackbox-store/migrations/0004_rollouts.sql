-- StackBox store, schema version 4: fleet rollouts.
--
-- Same rules as 0001: times as BIGINT milliseconds since the Unix epoch (UTC). Never edit
-- this file once released.

-- A rollout of one release to many clients, in waves (stackbox_core::rollout).
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    to_release TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'halted', 'succeeded')),
    -- The wave and concurrency settings it was asked with (JSON).
    settings TEXT NOT NULL,
    -- Who asked (JSON, stackbox_store::RequestedBy), if known.
    requested_by TEXT,
    -- Why it stopped starting upgrades: the first failed client, or the operator. Set once.
    halt_reason TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status <> 'halted' OR halt_reason IS NOT NULL)
);

-- At most one rollout runs at a time: two would race to move the same clients to different
-- releases. The database enforces it, whatever the application checked before.
CREATE UNIQUE INDEX rollouts_one_running ON rollouts (status) WHERE status = 'running';

-- Each client of a rollout, in the order it was planned. No foreign key to clients: a client
-- destroyed during a rollout leaves its line in the report.
CREATE TABLE rollout_members (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    wave BIGINT NOT NULL,
    -- The release it ran when the rollout was planned.
    from_release TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    -- Its upgrade's deployment, once started.
    deployment_id TEXT,
    -- Why it failed or was skipped, for people.
    detail TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, position),
    UNIQUE (rollout_id, client_id)
);
