-- MAS-shaped refresh tokens for the rules bench (bench/rules.sh), :n rows: chains of four
-- tokens per session, each replaced by the next (ON DELETE SET NULL, as MAS since
-- 20260109172950), MAS's partial consumed_at index. A token is consumed 2-50 hours ago,
-- within the last 30 minutes (1 in 5), or not at all (the last of 2 chains in 3): the
-- consumed-token rule deletes about half the table. `deletable` holds what it deletes, so
-- that a plain policy can delete the same rows without looking at the next token.
CREATE SCHEMA rules;
CREATE TABLE rules.template AS
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(s * 8 + i), 12, '0'))::uuid AS oauth2_refresh_token_id,
       ('00000000-0000-0000-0001-' || lpad(to_hex(s), 12, '0'))::uuid AS oauth2_session_id,
       now() - interval '60 hours' AS created_at,
       CASE WHEN i = 4 AND s % 3 > 0 THEN NULL
            WHEN (s * 7 + i) % 5 = 0 THEN now() - interval '20 minutes'
            ELSE now() - interval '2 hours' - ((s * 7919 + i * 104729) % 172800000) * interval '1 millisecond' END AS consumed_at,
       CASE WHEN i < 4 THEN ('00000000-0000-0000-0000-' || lpad(to_hex(s * 8 + i + 1), 12, '0'))::uuid END
           AS next_oauth2_refresh_token_id
  FROM generate_series(1, :n / 4) s, generate_series(1, 4) i;
-- Filled by bench/rules.sh from a run of MAS's own loop.
CREATE TABLE rules.deleted (oauth2_refresh_token_id uuid PRIMARY KEY);

CREATE PROCEDURE rules.reset() LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    DROP TABLE IF EXISTS rules.oauth2_refresh_tokens;
    CREATE TABLE rules.oauth2_refresh_tokens (LIKE rules.template, deletable boolean NOT NULL) WITH (autovacuum_enabled = off);
    INSERT INTO rules.oauth2_refresh_tokens
    SELECT t.*, d.oauth2_refresh_token_id IS NOT NULL FROM rules.template t LEFT JOIN rules.deleted d USING (oauth2_refresh_token_id);
    ALTER TABLE rules.oauth2_refresh_tokens ADD PRIMARY KEY (oauth2_refresh_token_id),
        ADD FOREIGN KEY (next_oauth2_refresh_token_id) REFERENCES rules.oauth2_refresh_tokens ON DELETE SET NULL;
    CREATE INDEX ON rules.oauth2_refresh_tokens (consumed_at, next_oauth2_refresh_token_id, oauth2_refresh_token_id)
        WHERE consumed_at IS NOT NULL;
    CREATE INDEX ON rules.oauth2_refresh_tokens (next_oauth2_refresh_token_id);
    ANALYZE rules.oauth2_refresh_tokens;
END $$;

-- MAS's cleanup_consumed (crates/storage-pg/src/oauth2/refresh_token.rs) as its job runs it:
-- 1000 rows a transaction, each batch after the last consumed_at it deleted, until none is left.
CREATE PROCEDURE rules.mas_loop() LANGUAGE plpgsql AS $$
DECLARE since timestamptz; until timestamptz := now() - interval '1 hour'; n bigint; last timestamptz;
BEGIN
    LOOP
        WITH to_delete AS (
            SELECT d.oauth2_refresh_token_id FROM rules.oauth2_refresh_tokens d
              LEFT JOIN rules.oauth2_refresh_tokens nx ON d.next_oauth2_refresh_token_id = nx.oauth2_refresh_token_id
             WHERE d.consumed_at IS NOT NULL AND (d.next_oauth2_refresh_token_id IS NULL OR nx.consumed_at IS NOT NULL)
               AND (since IS NULL OR d.consumed_at >= since) AND d.consumed_at < until
             ORDER BY d.consumed_at LIMIT 1000),
        deleted AS (DELETE FROM rules.oauth2_refresh_tokens r USING to_delete
                     WHERE r.oauth2_refresh_token_id = to_delete.oauth2_refresh_token_id RETURNING r.consumed_at)
        SELECT count(*), max(consumed_at) INTO n, last FROM deleted;
        COMMIT;
        EXIT WHEN n = 0;
        since := last;
    END LOOP;
END $$;
