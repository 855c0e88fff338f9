-- What FxA's recordActivity does on every grant: the parent upsert, then one multi-row upsert
-- for the scopes, each throttled in its ON CONFLICT predicate, as two autocommit statements.
\set u random(1, 1000)
INSERT INTO fxa_activity AS a VALUES (:u, 'c1', now(), now())
ON CONFLICT (user_id, client_id) DO UPDATE SET last_seen_at = excluded.last_seen_at
 WHERE excluded.last_seen_at > a.last_seen_at + interval '24 hours';
INSERT INTO fxa_activity_scopes AS s VALUES (:u, 'c1', 'sync', now(), now()), (:u, 'c1', 'relay', now(), now())
ON CONFLICT (user_id, client_id, scope) DO UPDATE SET last_seen_at = excluded.last_seen_at
 WHERE excluded.last_seen_at > s.last_seen_at + interval '24 hours';
