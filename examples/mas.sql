-- A matrix-authentication-service-shaped schema (seed 001). Ids are ULIDs stored as uuid,
-- as MAS does: the first 48 bits are the creation time in unix milliseconds.
CREATE SCHEMA IF NOT EXISTS mas;
SET search_path = mas, public;

-- A ULID for a given time: 48-bit unix-ms timestamp + 80 random bits, as a uuid.
CREATE FUNCTION ulid_at(ts timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM ts) * 1000)::bigint), 12, '0')
            || substr(md5(random()::text || clock_timestamp()::text), 1, 20))::uuid
$$;

CREATE TABLE users (
    user_id    uuid PRIMARY KEY,
    username   text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_sessions (
    user_session_id uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (user_id),
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    user_agent      text,
    last_active_at  timestamptz,
    last_active_ip  inet
);
CREATE INDEX user_sessions_finished_at_idx ON user_sessions (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX user_sessions_last_active_at_idx ON user_sessions (last_active_at) WHERE last_active_ip IS NOT NULL;

-- Child sessions. compat_sessions.user_session_id is ON DELETE SET NULL here, as MAS had it
-- until its migrations 20260122113523 (NO ACTION, NOT VALID) and 20260122114353 (VALIDATE);
-- docs/links.md and the demo make that change the same way, so logout can still be traced.
CREATE TABLE compat_sessions (
    compat_session_id uuid PRIMARY KEY,
    user_id           uuid NOT NULL REFERENCES users (user_id),
    device_id         text,
    user_session_id   uuid CONSTRAINT compat_sessions_user_session_id_fkey
                           REFERENCES user_sessions (user_session_id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    last_active_at    timestamptz,
    last_active_ip    inet
);
CREATE INDEX compat_sessions_user_session_id_idx ON compat_sessions (user_session_id);
CREATE INDEX compat_sessions_last_active_at_idx ON compat_sessions (last_active_at) WHERE last_active_ip IS NOT NULL;
CREATE INDEX compat_sessions_finished_at_idx ON compat_sessions (finished_at) WHERE finished_at IS NOT NULL;

-- What a compat session holds: tokens (NO ACTION, as in MAS) and SSO logins (SET NULL). MAS
-- deletes all three with a finished session, in one statement.
CREATE TABLE compat_access_tokens (
    compat_access_token_id uuid PRIMARY KEY,
    compat_session_id      uuid NOT NULL REFERENCES compat_sessions (compat_session_id),
    access_token           text NOT NULL UNIQUE,
    created_at             timestamptz NOT NULL,
    expires_at             timestamptz
);
CREATE INDEX compat_access_tokens_session_fk ON compat_access_tokens (compat_session_id);

CREATE TABLE compat_refresh_tokens (
    compat_refresh_token_id uuid PRIMARY KEY,
    compat_session_id       uuid NOT NULL REFERENCES compat_sessions (compat_session_id),
    compat_access_token_id  uuid NOT NULL REFERENCES compat_access_tokens (compat_access_token_id),
    refresh_token           text NOT NULL UNIQUE,
    created_at              timestamptz NOT NULL,
    consumed_at             timestamptz
);
CREATE INDEX compat_refresh_tokens_session_fk ON compat_refresh_tokens (compat_session_id);
CREATE INDEX compat_refresh_tokens_access_token_fk ON compat_refresh_tokens (compat_access_token_id);

CREATE TABLE compat_sso_logins (
    compat_sso_login_id uuid PRIMARY KEY,
    redirect_uri        text NOT NULL,
    login_token         text NOT NULL UNIQUE,
    compat_session_id   uuid REFERENCES compat_sessions (compat_session_id) ON DELETE SET NULL,
    user_session_id     uuid REFERENCES user_sessions (user_session_id) ON DELETE CASCADE,
    created_at          timestamptz NOT NULL,
    fulfilled_at        timestamptz,
    exchanged_at        timestamptz
);
CREATE INDEX compat_sso_logins_session_fk ON compat_sso_logins (compat_session_id);

CREATE TABLE oauth2_sessions (
    oauth2_session_id uuid PRIMARY KEY,
    user_id           uuid REFERENCES users (user_id),
    user_session_id   uuid REFERENCES user_sessions (user_session_id),  -- NO ACTION, as in MAS
    scope_list        text[] NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    last_active_at    timestamptz,
    last_active_ip    inet
);
CREATE INDEX oauth2_sessions_user_session_id_idx ON oauth2_sessions (user_session_id);
CREATE INDEX oauth2_sessions_last_active_at_idx ON oauth2_sessions (last_active_at) WHERE last_active_ip IS NOT NULL;

CREATE TABLE upstream_oauth_links (
    upstream_oauth_link_id     uuid PRIMARY KEY,
    upstream_oauth_provider_id uuid NOT NULL,
    user_id                    uuid REFERENCES users (user_id),  -- NULL: never associated
    subject                    text NOT NULL,
    created_at                 timestamptz NOT NULL
);

CREATE TABLE upstream_oauth_authorization_sessions (
    upstream_oauth_authorization_session_id uuid PRIMARY KEY,
    upstream_oauth_provider_id              uuid NOT NULL,
    upstream_oauth_link_id                  uuid REFERENCES upstream_oauth_links (upstream_oauth_link_id),  -- NO ACTION
    user_session_id                         uuid REFERENCES user_sessions (user_session_id) ON DELETE SET NULL,
    state                                   text NOT NULL,
    created_at                              timestamptz NOT NULL,
    completed_at                            timestamptz,
    consumed_at                             timestamptz
);
CREATE INDEX upstream_oauth_authorization_sessions_link_fk ON upstream_oauth_authorization_sessions (upstream_oauth_link_id);
-- MAS's index for its cleanup of orphaned sessions (by ULID, only those without a user session).
CREATE INDEX upstream_oauth_authorization_sessions_orphaned
    ON upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id) WHERE user_session_id IS NULL;

-- Which upstream authorization authenticated which user session: the source of the
-- upstream_oauth_authorization_sessions.user_session_id link (trigger + backfill in MAS).
CREATE TABLE user_session_authentications (
    user_session_authentication_id          uuid PRIMARY KEY,
    user_session_id                         uuid NOT NULL REFERENCES user_sessions (user_session_id),  -- NO ACTION
    upstream_oauth_authorization_session_id uuid REFERENCES upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id) ON DELETE SET NULL,
    created_at                              timestamptz NOT NULL
);
CREATE INDEX user_session_authentications_upstream_idx ON user_session_authentications (upstream_oauth_authorization_session_id);

-- Queue jobs: ULID ids, retries chained through a self-referencing FK.
CREATE TABLE queue_jobs (
    queue_job_id    uuid PRIMARY KEY,
    queue_name      text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL CHECK (status IN ('available', 'running', 'completed', 'failed', 'scheduled')),
    created_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    failed_at       timestamptz,
    next_attempt_id uuid REFERENCES queue_jobs (queue_job_id) ON DELETE SET NULL
);

CREATE TABLE user_recovery_sessions (
    user_recovery_session_id uuid PRIMARY KEY,
    email                    text NOT NULL,
    user_agent               text,
    ip_address               inet,
    created_at               timestamptz NOT NULL,
    consumed_at              timestamptz
);

CREATE TABLE user_recovery_tickets (
    user_recovery_ticket_id  uuid PRIMARY KEY,
    user_recovery_session_id uuid NOT NULL REFERENCES user_recovery_sessions (user_recovery_session_id) ON DELETE CASCADE,
    ticket                   text NOT NULL UNIQUE,
    created_at               timestamptz NOT NULL,
    expires_at               timestamptz NOT NULL
);

-- Demo data: one user with an old finished browser session that still has a compat child.
INSERT INTO users VALUES ('01890000-0000-0000-0000-000000000001', 'alice', now() - interval '90 days');
INSERT INTO user_sessions (user_session_id, user_id, created_at, finished_at, last_active_at, last_active_ip)
VALUES (ulid_at(now() - interval '60 days'), '01890000-0000-0000-0000-000000000001',
        now() - interval '60 days', now() - interval '45 days', now() - interval '45 days', '203.0.113.7');
INSERT INTO compat_sessions (compat_session_id, user_id, device_id, user_session_id, created_at, last_active_at, last_active_ip)
SELECT ulid_at(now() - interval '59 days'), user_id, 'DEVICE1', user_session_id,
       now() - interval '59 days', now() - interval '40 days', '203.0.113.7'
  FROM user_sessions;
INSERT INTO queue_jobs (queue_job_id, queue_name, status, created_at, completed_at)
SELECT ulid_at(now() - d * interval '1 day'), 'email', 'completed', now() - d * interval '1 day', now() - d * interval '1 day'
  FROM generate_series(1, 40) AS d;

RESET search_path;
