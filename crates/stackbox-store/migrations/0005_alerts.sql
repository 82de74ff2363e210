-- StackBox store, schema version 5: alerts and the signed-webhook outbox.
--
-- Same rules as 0001: times as BIGINT milliseconds since the Unix epoch (UTC). Never edit
-- this file once released.

-- Every alert occurrence: pending (held, not fired), firing, or resolved (kept as history).
-- A pending one whose condition went before it fired is deleted: it never was an incident.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    -- The condition's key (stackbox_core::alerts::Condition::key), such as
    -- "memory-near-limit:<client id>:website".
    alert_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    client_id TEXT,
    summary TEXT NOT NULL,
    since BIGINT NOT NULL,
    fired_at BIGINT,
    resolved_at BIGINT,
    CHECK (resolved_at IS NULL OR fired_at IS NOT NULL)
);

-- One open alert per condition: the database enforces the de-duplication, whatever two
-- evaluators racing each other believed.
CREATE UNIQUE INDEX alerts_one_open_per_key ON alerts (alert_key) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_client ON alerts (client_id, id);

-- Webhook deliveries, each once: the dedupe key (one per notice) is unique.
CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    -- The JSON body as it is signed and sent (a notice: no secret).
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT
);

CREATE INDEX webhook_outbox_by_due ON webhook_outbox (status, next_attempt_at);
