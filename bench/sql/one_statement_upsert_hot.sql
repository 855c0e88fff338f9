-- A stronger baseline than FxA's own code: the same throttled upsert folded into one statement.
\set u random(1, 1000)
WITH p AS (
    INSERT INTO fxa_activity AS a VALUES (:u, 'c1', now(), now())
    ON CONFLICT (user_id, client_id) DO UPDATE SET last_seen_at = excluded.last_seen_at
     WHERE excluded.last_seen_at > a.last_seen_at + interval '24 hours')
INSERT INTO fxa_activity_scopes AS s SELECT :u, 'c1', sc, now(), now() FROM unnest(ARRAY['sync', 'relay']) sc
ON CONFLICT (user_id, client_id, scope) DO UPDATE SET last_seen_at = excluded.last_seen_at
 WHERE excluded.last_seen_at > s.last_seen_at + interval '24 hours';
