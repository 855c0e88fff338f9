-- The batch orders' curve (bench/orders.sh): Ory Hydra's hydra_oauth2_access shape (wide rows,
-- its own indexes, times uncorrelated with the heap), rebuilt by o.reset(due_percent) with
-- that share of rows past the janitor's hour; :n rows. bench/orders.sh analyzes each table
-- after its load is counted (fresh_statistics), as autovacuum would have.
CREATE SCHEMA o;
CREATE TABLE o.networks (id uuid PRIMARY KEY, created_at timestamp NOT NULL);
CREATE INDEX ON o.networks (created_at);
INSERT INTO o.networks VALUES ('00000000-0000-0000-0004-000000000001', now() - interval '1 year');
CREATE TABLE o.template AS
SELECT 'sig-' || md5(g::text) AS signature, 'req-' || g AS request_id, ((g::bigint * 7919) % 10000) / 100.0 AS share,
       ((g::bigint * 7919) % 3000) * interval '1 second' AS jitter,
       'client-' || (g % 50) AS client_id, 'openid offline' AS scope, repeat(md5(g::text), 16) AS session_data,
       'subject-' || (g % 10000) AS subject, '00000000-0000-0000-0004-000000000001'::uuid AS nid
  FROM generate_series(1, :n) g;

CREATE PROCEDURE o.reset(due_percent numeric) LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    DROP TABLE IF EXISTS o.access;
    -- The audit rows of the previous run (the one-statement baseline writes them there too).
    TRUNCATE lifecycle.audit_log;
    CREATE TABLE o.access WITH (autovacuum_enabled = off) AS
    SELECT signature, request_id,
           (now() AT TIME ZONE 'UTC') - CASE WHEN share < due_percent THEN interval '2 hours' ELSE interval '0' END - jitter AS requested_at,
           client_id, scope, session_data, subject, nid
      FROM o.template ORDER BY md5(signature);
    ALTER TABLE o.access ADD PRIMARY KEY (signature), ADD FOREIGN KEY (nid) REFERENCES o.networks ON DELETE CASCADE;
    CREATE INDEX access_requested_at_idx ON o.access (requested_at, nid);
    CREATE INDEX access_client_id_idx ON o.access (client_id, nid);
    CREATE INDEX access_request_id_idx ON o.access (request_id, nid);
END $$;

-- Narrow rows (~157 a page), no children: where a page's many rows make physical order pay
-- for each page it reads. o.reset_narrow(due_percent); 2 × :n rows.
CREATE TABLE o.narrow_template AS
SELECT g::bigint AS id, (g % 1000)::int AS user_id, ((g::bigint * 7919) % 10000) / 100.0 AS share FROM generate_series(1, 2 * :n) g;
CREATE PROCEDURE o.reset_narrow(due_percent numeric) LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    DROP TABLE IF EXISTS o.narrow;
    CREATE TABLE o.narrow WITH (autovacuum_enabled = off) AS
    SELECT id, user_id, now() + CASE WHEN share < due_percent THEN - interval '1 day' ELSE interval '1 day' END
                               + (id % 3600) * interval '1 second' AS expires_at
      FROM o.narrow_template;
    ALTER TABLE o.narrow ADD PRIMARY KEY (id);
    CREATE INDEX ON o.narrow (expires_at);
END $$;
