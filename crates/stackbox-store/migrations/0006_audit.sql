-- StackBox store, schema version 6: the audit log.
--
-- Same rules as 0001: times as BIGINT milliseconds since the Unix epoch (UTC). Never edit
-- this file once released. Rows are only ever inserted: migration 0007 adds triggers that
-- refuse UPDATE and DELETE, so not even a bug in StackBox rewrites history.

-- One row per change asked of the control plane: who (the token's id, and whose it is), what
-- (the method and the route as declared, the client it is about), when, and the result (the
-- HTTP status, the deployment it started). No request body is kept: bodies may hold secrets.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    -- `operator`, `client` (a client token) or `public` (the sign-up, the payment webhook and
    -- the credentials page take no token).
    actor_kind TEXT NOT NULL CHECK (actor_kind IN ('operator', 'client', 'public')),
    token_id TEXT,
    -- Such as "POST /v1/clients/{id}/stop".
    action TEXT NOT NULL,
    client_id TEXT,
    status BIGINT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed')),
    deployment_id TEXT
);

CREATE INDEX audit_log_by_client ON audit_log (client_id, id);
