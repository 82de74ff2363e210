-- StackBox store, schema version 2: onboarding (sign-ups, Stripe events, billing, the mail
-- outbox and one-time credential links).
--
-- Same rules as 0001: one text for SQLite and PostgreSQL, times as BIGINT milliseconds since
-- the Unix epoch (UTC), bytes as BYTEA. Never edit this file once released.

-- A sign-up from the public form, until it is paid and provisioned (or abandoned).
CREATE TABLE signups (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    -- The validated configuration as ClientSpec::to_toml renders it, without client_id (the
    -- client gets its id when it is provisioned).
    spec TEXT NOT NULL,
    plan TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'provisioned', 'expired')),
    -- Several NULLs are allowed by a UNIQUE column on both engines.
    checkout_session_id TEXT UNIQUE,
    customer_id TEXT,
    subscription_id TEXT,
    -- No foreign key: the sign-up is history and outlives a destroyed client.
    client_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- What expire_signups scans: pending sign-ups by age.
CREATE INDEX signups_by_status_and_age ON signups (status, created_at);

-- Every Stripe event id handled, so a redelivered event is recognised.
CREATE TABLE stripe_events (
    event_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE INDEX stripe_events_by_age ON stripe_events (received_at);

-- A client's subscription and where it stands.
CREATE TABLE billing (
    client_id TEXT PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
    customer_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL UNIQUE,
    plan TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'past_due', 'suspended', 'cancelled')),
    payment_failed_at BIGINT,
    -- When a past_due client is stopped if it has not paid by then.
    suspend_at BIGINT,
    cancelled_at BIGINT,
    -- When a cancelled client's data is destroyed.
    destroy_at BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX billing_by_customer ON billing (customer_id);
-- What due_suspensions and due_destructions scan.
CREATE INDEX billing_by_suspension ON billing (status, suspend_at);
CREATE INDEX billing_by_destruction ON billing (status, destroy_at);

-- Mail to send, durable and retried. No foreign key on client_id: a goodbye mail outlives its
-- client.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    -- What makes a mail the same mail (such as "welcome:<client id>"): never queued twice.
    dedupe_key TEXT NOT NULL UNIQUE,
    client_id TEXT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- The text and HTML bodies, sealed with the master key like secrets (they hold one-time
    -- links): format byte, nonce, ciphertext and tag, the mail id as associated data.
    body_sealed BYTEA NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- While 'sending': when another sender may take the mail over (its sender crashed).
    lease_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT
);

-- What claim_due_mail scans.
CREATE INDEX outbox_by_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_by_lease ON outbox (status, lease_until);
CREATE INDEX outbox_by_client ON outbox (client_id, id);

-- One-time links to a client's credentials. Only the token's SHA-256 is stored.
CREATE TABLE credential_links (
    token_hash BYTEA PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    viewed_at BIGINT
);

CREATE INDEX credential_links_by_client ON credential_links (client_id);
CREATE INDEX credential_links_by_expiry ON credential_links (expires_at);
