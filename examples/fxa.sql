-- A Mozilla-accounts-shaped schema (seed 000): accounts, OAuth clients and the tokens granted
-- to them. Per-(user, client, scope) activity lives in lifecycle.activity* (see
-- docs/activity.md); this schema is the app side that calls into it.
CREATE SCHEMA IF NOT EXISTS fxa;
SET search_path = fxa, public;

CREATE TABLE accounts (
    uid        text PRIMARY KEY,           -- hex of FxA's BINARY(16) uid
    email      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clients (
    id   text PRIMARY KEY,                 -- hex of FxA's BINARY(8) client id
    name text NOT NULL
);

CREATE TABLE refresh_tokens (
    token_id    text PRIMARY KEY,          -- an id, not the token itself
    user_id     text NOT NULL REFERENCES accounts (uid) ON DELETE CASCADE,
    client_id   text NOT NULL REFERENCES clients (id),
    scope       text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at  timestamptz                -- NULL = never
);

INSERT INTO clients VALUES
    ('5882386c6d801776', 'Firefox Desktop'),
    ('dcdb5ae7add825d2', '123Done');
INSERT INTO accounts (uid, email) VALUES
    ('a1b2c3d4e5f60718293a4b5c6d7e8f90', 'alice@example.com');
INSERT INTO refresh_tokens (token_id, user_id, client_id, scope, expires_at) VALUES
    ('rt-1', 'a1b2c3d4e5f60718293a4b5c6d7e8f90', '5882386c6d801776',
     ARRAY['https://identity.mozilla.com/apps/oldsync', 'profile'], NULL),
    ('rt-2', 'a1b2c3d4e5f60718293a4b5c6d7e8f90', 'dcdb5ae7add825d2',
     ARRAY['profile'], now() - interval '1 day');

RESET search_path;
