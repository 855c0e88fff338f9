-- Rules every capability shares, each written once here (the batch bounds live in Rust:
-- src/limits.rs, lifecycle._require_batch).

-- The names of policies, links and event consumers: they appear in NOTICEs, job names, audit
-- rows and NOTIFY channels, so nothing in them may need quoting.
CREATE FUNCTION lifecycle._is_plain_name(name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT name ~ '^[a-z][a-z0-9_]{0,62}$' $$;

-- Raises 22023 unless `value` is a plain name; `what` names it in the message.
CREATE FUNCTION lifecycle._require_plain_name(value text, what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR NOT lifecycle._is_plain_name(value) THEN
        RAISE EXCEPTION 'invalid % %', what, coalesce(quote_literal(value), 'NULL')
            USING ERRCODE = '22023',
                  HINT = format('A %s is 1 to 63 characters: a lowercase letter, then lowercase letters, digits or _.', what);
    END IF;
END
$$;

-- A column of a table as the code needs it, or 42703 naming what is missing.
CREATE FUNCTION lifecycle._column(relation regclass, column_name name,
                                  OUT type_oid oid, OUT type_name text, OUT not_null boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT a.atttypid, format_type(a.atttypid, NULL), a.attnotnull INTO type_oid, type_name, not_null
      FROM pg_attribute a
     WHERE a.attrelid = relation AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column % of % does not exist', quote_literal(column_name), relation
            USING ERRCODE = '42703', HINT = 'Name an existing column of the table.';
    END IF;
END
$$;

-- Whether an index of `relation` starts with one of `columns` (so probing or ordering by it
-- is an index scan, not a scan of the table).
CREATE FUNCTION lifecycle._leads_an_index(relation regclass, columns name[])
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = relation AND a.attname = ANY (columns))
$$;
