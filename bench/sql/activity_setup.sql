-- The FxA-style hand-written baseline: the same tables as lifecycle.activity(_scopes), written
-- with a throttled upsert (parent + scopes in one statement, the cheapest form of it).
DROP TABLE IF EXISTS fxa_activity_scopes, fxa_activity;
CREATE TABLE fxa_activity (
    user_id text NOT NULL, client_id text NOT NULL,
    first_seen_at timestamptz NOT NULL, last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id));
CREATE INDEX ON fxa_activity (last_seen_at, user_id);
CREATE TABLE fxa_activity_scopes (
    user_id text NOT NULL, client_id text NOT NULL, scope text NOT NULL,
    first_seen_at timestamptz NOT NULL, last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id, scope),
    FOREIGN KEY (user_id, client_id) REFERENCES fxa_activity ON DELETE CASCADE);
CREATE INDEX ON fxa_activity_scopes (scope, last_seen_at, user_id);
-- 1000 users, already active (rows exist, inside the 24h throttle) for the hot-path runs.
INSERT INTO fxa_activity SELECT i::text, 'c1', now(), now() FROM generate_series(1, 1000) i;
INSERT INTO fxa_activity_scopes SELECT i::text, 'c1', s, now(), now()
  FROM generate_series(1, 1000) i, unnest(ARRAY['sync', 'relay']) s;
SELECT count(*) FILTER (WHERE lifecycle.record_activity(i::text, 'c1', '{sync,relay}')) AS warmed
  FROM generate_series(1, 1000) i;
