-- Tokens for the computed-time and keep-newest benches (bench/rules.sh), :n rows, 20 per user:
-- half expire an hour after creation (all of those are past), half in 30 years; the stored
-- expires_at is the same time as a column. deletable_keep marks the rows beyond each user's
-- 10 newest, so that a plain policy can delete what keep_newest deletes without the lookup.
CREATE SCHEMA times;
CREATE TABLE times.template AS
SELECT g AS id, g % (:n / 20) AS user_id,
       now() - interval '2 hours' - g * interval '100 milliseconds' AS created_at,
       CASE WHEN g % 2 = 0 THEN 3600 ELSE 946080000 END AS expires_in
  FROM generate_series(1, :n) g;

CREATE PROCEDURE times.reset() LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    DROP TABLE IF EXISTS times.tokens;
    CREATE TABLE times.tokens WITH (autovacuum_enabled = off) AS
    SELECT t.*, lifecycle.add_seconds(t.created_at, t.expires_in) AS expires_at,
           row_number() OVER (PARTITION BY t.user_id ORDER BY t.created_at DESC, t.id DESC) > 10 AS deletable_keep
      FROM times.template t;
    ALTER TABLE times.tokens ADD PRIMARY KEY (id);
    CREATE INDEX ON times.tokens ((lifecycle.add_seconds(created_at, expires_in)));
    CREATE INDEX ON times.tokens (expires_at);
    CREATE INDEX ON times.tokens (created_at);
    CREATE INDEX ON times.tokens (user_id, created_at, id);
    ANALYZE times.tokens;
END $$;
