-- Users, browser sessions, API tokens, provider settings and sessions: all durable state of
-- the control plane (DESIGN.md). Never edit a migration once applied; add a new one.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'member')),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_email_lowercase CHECK (email = lower(email))
);

-- Browser sessions behind the signed `better-auth.session_token` cookie; only a digest of the
-- token is stored.
CREATE TABLE auth_sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_digest bytea NOT NULL UNIQUE,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id);
CREATE INDEX auth_sessions_expiry_idx ON auth_sessions (expires_at);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    token_digest bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id, created_at DESC);

-- The organisation's model providers: one row, the whole configuration encrypted
-- (AES-256-GCM, key id in the ciphertext's header).
CREATE TABLE provider_settings (
    id         smallint PRIMARY KEY CHECK (id = 1),
    ciphertext bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id                  uuid PRIMARY KEY,
    owner_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title               text NOT NULL,
    private             boolean NOT NULL,
    status              text NOT NULL CHECK (status IN ('provisioning', 'starting', 'ready', 'failed', 'deleting')),
    activity            text NOT NULL DEFAULT 'idle' CHECK (activity IN ('idle', 'busy', 'retry')),
    status_reason       text,
    runtime_handle      jsonb,
    opencode_session_id text,
    pending_prompt      text,
    version             bigint NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- Keyset pagination, newest first: public sessions of anyone, and each owner's own.
CREATE INDEX sessions_public_page_idx ON sessions (created_at DESC, id DESC) WHERE NOT private;
CREATE INDEX sessions_owner_page_idx ON sessions (owner_id, created_at DESC, id DESC);
-- Recovery at start-up looks for sessions that are not settled.
CREATE INDEX sessions_unsettled_idx ON sessions (status) WHERE status <> 'failed';
