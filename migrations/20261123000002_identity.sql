-- OpenID Connect sign-ins between the redirect to the provider and the callback. Keyed by a
-- digest of `state`; the PKCE verifier is sealed (AES-256-GCM), never stored in clear.
CREATE TABLE pending_logins (
    state_digest  bytea PRIMARY KEY,
    provider_id   text NOT NULL,
    nonce         text NOT NULL,
    code_verifier bytea NOT NULL,
    callback_url  text NOT NULL,
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_logins_expiry_idx ON pending_logins (expires_at);
