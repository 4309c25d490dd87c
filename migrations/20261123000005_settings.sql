-- Which visibility new sessions start with, per surface (web, Slack threads, Slack DMs): the
-- organisation's defaults (one row) and each user's preferences (null: inherit).
CREATE TABLE org_settings (
    id                 smallint PRIMARY KEY CHECK (id = 1),
    default_visibility jsonb NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_settings (
    user_id            uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    default_visibility jsonb NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
