\set u random(1000000, 9000000000000000000)
WITH p AS (
    INSERT INTO fxa_activity AS a VALUES (:u, 'c1', now(), now())
    ON CONFLICT (user_id, client_id) DO UPDATE SET last_seen_at = excluded.last_seen_at)
INSERT INTO fxa_activity_scopes AS s SELECT :u, 'c1', sc, now(), now() FROM unnest(ARRAY['sync', 'relay']) sc
ON CONFLICT (user_id, client_id, scope) DO UPDATE SET last_seen_at = excluded.last_seen_at;
