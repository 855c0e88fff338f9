-- A Mattermost-shaped schema (seed 002): personal access tokens with expiry in unix
-- milliseconds (0 = never expires) and the sessions minted from them.
--
-- One deliberate difference from Mattermost: a session records the id of the token that
-- minted it (`useraccesstokenid`, a real FK). Mattermost finds those sessions by joining on
-- the secret `token` column; with the id nothing ever needs to read the secret.
CREATE SCHEMA IF NOT EXISTS mattermost;
SET search_path = mattermost, public;

CREATE TABLE users (
    id        varchar(26) PRIMARY KEY,
    username  text NOT NULL UNIQUE,
    createat  bigint NOT NULL
);

CREATE TABLE useraccesstokens (
    id          varchar(26) PRIMARY KEY,
    token       varchar(26) NOT NULL UNIQUE,      -- the secret: never read by pg_lifecycle
    userid      varchar(26) NOT NULL REFERENCES users (id),
    description text NOT NULL DEFAULT '',
    isactive    boolean NOT NULL DEFAULT true,
    expiresat   bigint NOT NULL DEFAULT 0 CHECK (expiresat >= 0)  -- unix ms, 0 = never
);
CREATE INDEX idx_useraccesstokens_expiresat ON useraccesstokens (expiresat) WHERE expiresat > 0;

CREATE TABLE sessions (
    id                varchar(26) PRIMARY KEY,
    token             varchar(26) NOT NULL,
    userid            varchar(26) NOT NULL REFERENCES users (id),
    createat          bigint NOT NULL,
    expiresat         bigint NOT NULL DEFAULT 0,  -- unix ms, 0 = never
    lastactivityat    bigint NOT NULL DEFAULT 0,
    useraccesstokenid varchar(26) REFERENCES useraccesstokens (id),
    props             jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX idx_sessions_useraccesstokenid ON sessions (useraccesstokenid);

-- A little data for the demo: one live, one expired and one never-expiring token.
INSERT INTO users VALUES ('u1', 'alice', 1700000000000), ('u2', 'bob', 1700000000000);
INSERT INTO useraccesstokens (id, token, userid, description, expiresat) VALUES
    ('pat-live',    'secret-live',    'u1', 'CI bot',     (extract(epoch FROM now() + interval '30 days') * 1000)::bigint),
    ('pat-expired', 'secret-expired', 'u1', 'old script', (extract(epoch FROM now() - interval '2 days') * 1000)::bigint),
    ('pat-forever', 'secret-forever', 'u2', 'legacy',     0);
-- Sessions minted from tokens: expiry clamped so a session never outlives its token.
INSERT INTO sessions (id, token, userid, createat, expiresat, useraccesstokenid)
SELECT 's-' || t.id, t.token, t.userid, (extract(epoch FROM now()) * 1000)::bigint,
       lifecycle.clamp_expiry((extract(epoch FROM now() + interval '180 days') * 1000)::bigint, t.expiresat),
       t.id
  FROM useraccesstokens t;

RESET search_path;
