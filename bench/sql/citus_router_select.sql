\set u random(1, 1000)
SELECT last_seen_at FROM lifecycle.activity WHERE user_id = :u::text AND client_id = 'c1';
