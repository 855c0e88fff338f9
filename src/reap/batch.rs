//! One batch of one policy: pick due rows by keyset cursor, act on them, audit, move the cursor.
//!
//! Cost is O(batch): the candidate scan starts at the persisted cursor `[time, key]` on the
//! time index instead of rescanning from the oldest row, so rows already reaped (dead tuples)
//! and rows passed over (blocked by children, locked by the app) are not read again in the same
//! sweep. `(time, key)` ordering makes equal timestamps at a batch boundary neither skipped nor
//! processed twice. A sweep ends when a batch comes back short; the next one starts from the
//! oldest due row again, which is how skipped rows are retried.

use crate::error::{self, Code};
use crate::role;
use crate::sql::{self, col, ident};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::datum::Interval;

/// Distinguishes our advisory locks from the application's (two-int4 key space: "LCyc").
const ADVISORY_LOCK_CLASS: i32 = 0x4c43_7963;

/// A policy as a batch needs it, with table names resolved now (renames are followed).
pub struct Policy {
    pub id: i32,
    pub name: String,
    pub owner: pg_sys::Oid,
    pub relation: String,
    key_column: String,
    key_type: String,
    time_column: String,
    time_type: String,
    time_kind: String,
    older_than: Option<Interval>,
    filter: Option<String>,
    nullify: Option<Vec<String>>,
    dependents: String,
    children: Vec<(String, String)>,
    blocking: Vec<(String, String)>,
    audit: Option<Vec<String>>,
    batch_size: i32,
    pub cursor: Option<String>,
    partitioned: bool,
}

/// One row per batch. The referencing foreign keys (children that block a row) are looked up
/// only for dependents = 'block': pg_constraint has no index on confrelid, so that lookup
/// reads the whole catalog.
const LOAD: &str = "
SELECT p.id, p.name, p.owner::oid,
       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
       p.key_column::text, p.key_type, p.time_column::text, p.time_type, p.time_kind, p.older_than,
       p.filter, p.nullify_columns::text[], p.dependents,
       ARRAY(SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(cc.relname)
               FROM unnest(p.child_relations) WITH ORDINALITY AS u(r, ord)
               JOIN pg_catalog.pg_class cc ON cc.oid = u.r
               JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace ORDER BY u.ord),
       p.child_columns::text[],
       CASE WHEN p.dependents = 'block' THEN
       ARRAY(SELECT pg_catalog.quote_ident(fn.nspname) || '.' || pg_catalog.quote_ident(fc.relname)
               FROM pg_catalog.pg_constraint f
               JOIN pg_catalog.pg_class fc ON fc.oid = f.conrelid
               JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
              WHERE f.confrelid = p.relation AND f.contype = 'f' AND cardinality(f.conkey) = 1 ORDER BY f.oid) END,
       CASE WHEN p.dependents = 'block' THEN
       ARRAY(SELECT fa.attname::text
               FROM pg_catalog.pg_constraint f
               JOIN pg_catalog.pg_attribute fa ON fa.attrelid = f.conrelid AND fa.attnum = f.conkey[1]
              WHERE f.confrelid = p.relation AND f.contype = 'f' AND cardinality(f.conkey) = 1 ORDER BY f.oid) END,
       p.audit_columns::text[], p.batch_size, s.cursor::text, c.oid IS NOT NULL, c.relkind = 'p'
  FROM lifecycle.policies p
  JOIN lifecycle.policy_state s ON s.policy_id = p.id
  LEFT JOIN pg_catalog.pg_class c ON c.oid = p.relation
  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE p.id = $1";

/// (quoted relation, column) pairs from two parallel arrays of LOAD.
fn pairs(relations: Vec<String>, columns: Vec<String>) -> Vec<(String, String)> {
    relations.into_iter().zip(columns).collect()
}

impl Policy {
    /// Loads a policy and checks that the caller may act for its owner.
    pub fn load(id: i32) -> Policy {
        let found = sql::optional_row(LOAD, &[id.into()], |row| {
            if !row.get::<bool>(21)?.unwrap_or(false) {
                let name = row.get::<String>(2)?.unwrap_or_default();
                error::raise(
                    Code::ERRCODE_UNDEFINED_TABLE,
                    format!("the table of policy {name} no longer exists"),
                    None,
                    Some("Drop the policy with lifecycle.drop_policy, or register it again on the new table."),
                );
            }
            Ok(Policy {
                id: row.get(1)?.unwrap_or_default(),
                name: row.get(2)?.unwrap_or_default(),
                owner: row.get(3)?.unwrap_or_default(),
                relation: row.get(4)?.unwrap_or_default(),
                key_column: row.get(5)?.unwrap_or_default(),
                key_type: row.get(6)?.unwrap_or_default(),
                time_column: row.get(7)?.unwrap_or_default(),
                time_type: row.get(8)?.unwrap_or_default(),
                time_kind: row.get(9)?.unwrap_or_default(),
                older_than: row.get(10)?,
                filter: row.get(11)?,
                nullify: row.get(12)?,
                dependents: row.get(13)?.unwrap_or_default(),
                children: pairs(row.get(14)?.unwrap_or_default(), row.get(15)?.unwrap_or_default()),
                blocking: pairs(row.get(16)?.unwrap_or_default(), row.get(17)?.unwrap_or_default()),
                audit: row.get(18)?,
                batch_size: row.get(19)?.unwrap_or(1000),
                cursor: row.get(20)?,
                partitioned: row.get(22)?.unwrap_or(false),
            })
        });
        let policy = found.unwrap_or_else(|| {
            error::raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("policy with id {id} does not exist"), None, None)
        });
        check_may_act(policy.owner, &policy.name);
        policy
    }

    fn same_time_and_key(&self) -> bool {
        self.time_column == self.key_column
    }

    /// The due predicate over alias `t`: rule, time kind, "never" values, nullify, filter.
    /// `$3` is `older_than`.
    pub fn due(&self) -> String {
        let t = col("t", &self.time_column);
        let reference = if self.older_than.is_some() { "(now() - $3::interval)" } else { "now()" };
        let op = if self.older_than.is_some() { "<" } else { "<=" };
        let mut due = match self.time_kind.as_str() {
            "timestamptz" => format!("{t} {op} {reference}"),
            "timestamp" => format!("{t} {op} ({reference} AT TIME ZONE pg_catalog.current_setting('TimeZone'))"),
            "unix_ms" => format!("{t} > 0 AND {t} {op} pg_catalog.floor(extract(epoch FROM {reference}) * 1000)::bigint"),
            "unix_s" => format!("{t} > 0 AND {t} {op} pg_catalog.floor(extract(epoch FROM {reference}))::bigint"),
            _ if self.time_type == "uuid" => format!("{t} < lifecycle.ulid_floor({reference})"),
            _ => format!("{t} < lifecycle.ulid_floor_text({reference})"),
        };
        if let Some(columns) = &self.nullify {
            let any_set: Vec<String> = columns.iter().map(|c| format!("{} IS NOT NULL", col("t", c))).collect();
            due.push_str(&format!(" AND ({})", any_set.join(" OR ")));
        }
        if let Some(filter) = &self.filter {
            due.push_str(&format!(" AND ({filter})"));
        }
        due
    }

    /// Keyset position after `$1` (the cursor as jsonb text `[time, key]`). Each bound is a
    /// scalar subquery, so it is parsed and cast once per batch, not once per candidate row.
    fn after_cursor(&self) -> String {
        let (t, k) = (col("t", &self.time_column), col("t", &self.key_column));
        let time = format!("(SELECT ($1::jsonb ->> 0)::{})", self.time_type);
        let key = format!("(SELECT ($1::jsonb ->> 1)::{})", self.key_type);
        if self.same_time_and_key() {
            format!("{k} > {key}")
        } else {
            format!("{t} >= {time} AND ({t} > {time} OR {k} > {key})")
        }
    }

    fn order(&self, alias: &str, key: &str, time: &str, desc: bool) -> String {
        let dir = if desc { " DESC" } else { "" };
        if self.same_time_and_key() {
            format!("{alias}.{key}{dir}")
        } else {
            format!("{alias}.{time}{dir}, {alias}.{key}{dir}")
        }
    }

    /// Whether rows can be blocked: dependents = 'block' and children exist.
    fn may_block(&self) -> bool {
        self.dependents == "block" && !self.blocking.is_empty()
    }

    /// Whether children still reference row `t` (dependents = 'block').
    fn blocked(&self) -> String {
        if !self.may_block() {
            return "false".into();
        }
        let key = col("t", &self.key_column);
        let checks: Vec<String> = self
            .blocking
            .iter()
            .map(|(rel, c)| format!("EXISTS (SELECT 1 FROM {rel} c WHERE {} = {key})", col("c", c)))
            .collect();
        checks.join(" OR ")
    }

    /// Candidate rows of the next batch, in keyset order, at most `limit` (SQL: a number or
    /// a parameter). For a preview they carry their audit data and are not locked; for a
    /// batch they are locked, and the audit data is taken later from the acted-on rows.
    pub fn candidates(&self, limit: &str, preview: bool) -> String {
        let (t, k) = (ident(&self.time_column), ident(&self.key_column));
        let audit = if preview { self.audit_data() } else { "NULL::jsonb".into() };
        let mut sql = format!(
            "SELECT t.{k} AS k, t.{t} AS tm, t.ctid AS tid, {blocked} AS blocked, {audit} AS data FROM {rel} t WHERE {due}",
            blocked = self.blocked(),
            rel = self.relation,
            due = self.due(),
        );
        if self.cursor.is_some() {
            sql.push_str(&format!(" AND {}", self.after_cursor()));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", self.order("t", &k, &t, false)));
        if !preview {
            sql.push_str(" FOR UPDATE OF t SKIP LOCKED");
        }
        sql
    }

    /// The whole batch as one statement: returns acted, examined, blocked, new cursor, audit.
    /// The limit is part of the text (not a parameter) so that the kept plan is planned for
    /// it: a generic plan for "LIMIT $n" assumes a tenth of the table.
    fn statement(&self, limit: i32) -> String {
        let key = ident(&self.key_column);
        let mut sql = format!("WITH batch AS ({})", self.candidates(&limit.to_string(), false));
        // The rows to act on: all candidates, or those no child blocks (a second CTE, only
        // when there is something to filter).
        let acted = if self.may_block() {
            sql.push_str(", acted AS (SELECT k, tid FROM batch WHERE NOT blocked)");
            "acted"
        } else {
            "batch"
        };
        // `= ANY (ARRAY(...))` rather than a join: the planner cannot see that `acted` holds
        // at most one batch, and would happily hash-join it against a full scan of the table.
        let keys = format!("ANY (ARRAY(SELECT k FROM {acted}))");
        for (i, (rel, c)) in self.children.iter().enumerate() {
            sql.push_str(&format!(", child_{i} AS (DELETE FROM {rel} c WHERE {} = {keys})", col("c", c)));
        }
        // The candidates are locked FOR UPDATE above, so their ctids cannot change before the
        // action: a TID scan spares a second index probe per row. Not on partitioned tables,
        // where a ctid is only unique within one partition.
        let target = if self.partitioned {
            format!("t.{key} = {keys}")
        } else {
            format!("t.ctid = ANY (ARRAY(SELECT tid FROM {acted}))")
        };
        let returning = format!("t.{key} AS k, {} AS data", self.audit_data());
        match &self.nullify {
            None => sql.push_str(&format!(
                ", done AS (DELETE FROM {rel} t WHERE {target} RETURNING {returning})",
                rel = self.relation
            )),
            Some(columns) => sql.push_str(&format!(
                ", done AS (UPDATE {rel} t SET {sets} WHERE {target} RETURNING {returning})",
                rel = self.relation,
                sets = columns.iter().map(|c| format!("{} = NULL", ident(c))).collect::<Vec<_>>().join(", ")
            )),
        }
        let (keys, data) = if self.audit.is_some() {
            ("array_agg(d.k::text)", "array_agg(d.data)")
        } else {
            ("NULL::text[]", "NULL::jsonb[]")
        };
        let blocked = if self.may_block() { "(SELECT count(*) FROM batch WHERE blocked)" } else { "0::bigint" };
        // The last row in keyset order is found first and only then turned into jsonb, so
        // the cursor costs one jsonb value per batch, not one per row. The audit rows leave
        // as two arrays in the same order (one aggregate pass), to be written by `run`.
        sql.push_str(&format!(
            " SELECT a.acted, (SELECT count(*) FROM batch), {blocked},
                     (SELECT jsonb_build_array(b.tm, b.k)::text FROM (SELECT tm, k FROM batch b ORDER BY {order} LIMIT 1) b),
                     a.keys, a.data
                FROM (SELECT count(*) AS acted, {keys} AS keys, {data} AS data FROM done d) a",
            order = self.order("b", "k", "tm", true)
        ));
        sql
    }

    /// The audit columns of row `t` as jsonb (NULL without audit).
    fn audit_data(&self) -> String {
        sql::jsonb_of_columns("t", self.audit.as_deref().unwrap_or_default())
    }

    /// `$1` cursor, `$2` limit (where the text has a parameter for it), `$3` older_than.
    pub fn args<'a>(&'a self, limit: i32) -> Vec<DatumWithOid<'a>> {
        vec![self.cursor.clone().into(), limit.into(), self.older_than.into()]
    }
}

/// Refuses callers that are not the policy's owner (or a member of that role).
pub fn check_may_act(owner: pg_sys::Oid, policy_name: &str) {
    if !role::has_privs_of(role::current(), owner) {
        error::raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for policy {policy_name}"),
            None,
            Some("Only the policy's owner (or a member of that role) can run, preview or change it."),
        );
    }
}

/// What one batch did. `sweep_done`: nothing due is left after the cursor (or another
/// reaper holds the policy), so this policy is finished for the current `reap` call.
pub struct Outcome {
    pub acted: i64,
    pub examined: i64,
    pub sweep_done: bool,
}

/// Runs one batch of policy `id` with at most `limit` rows. Skips (examined = 0) when another
/// reaper holds the policy's lock.
pub fn run(id: i32, limit: i32) -> Outcome {
    let policy = Policy::load(id);
    let limit = limit.min(policy.batch_size);
    let locked = sql::optional_row(
        "SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)",
        &[ADVISORY_LOCK_CLASS.into(), id.into()],
        |row| row.get::<bool>(1),
    )
    .flatten()
    .unwrap_or(false);
    if !locked {
        return Outcome { acted: 0, examined: 0, sweep_done: true };
    }
    let statement = policy.statement(limit);
    let action = if policy.nullify.is_some() { "nullify" } else { "delete" };
    let bookkeeper = role::extension_owner();
    // One SPI connection for both statements: the audit arrays go from the first to the
    // second as the binary values they are (they live until the connection ends), not
    // through text.
    Spi::connect_mut(|client| {
        let row = role::run_as(policy.owner, true, || sql::run_kept(client, true, &statement, &policy.args(limit), Some(1)))?
            .first();
        let acted = row.get::<i64>(1)?.unwrap_or(0);
        let examined = row.get::<i64>(2)?.unwrap_or(0);
        let blocked = row.get::<i64>(3)?.unwrap_or(0);
        let cursor = row.get::<String>(4)?;
        let audit_keys = raw_arg(row.get_datum_by_ordinal(5)?, pg_sys::TEXTARRAYOID);
        let audit_data = raw_arg(row.get_datum_by_ordinal(6)?, pg_sys::JSONBARRAYOID);
        let sweep_done = examined < i64::from(limit);
        let args = [
            policy.id.into(),
            policy.name.as_str().into(),
            policy.relation.as_str().into(),
            action.into(),
            audit_keys,
            audit_data,
            sweep_done.into(),
            cursor.into(),
            acted.into(),
            blocked.into(),
        ];
        role::run_as(bookkeeper, false, || sql::run_kept(client, true, BOOKKEEPING, &args, None))?;
        Ok::<_, pgrx::spi::Error>(Outcome { acted, examined, sweep_done })
    })
    .unwrap_or_else(|e| error::internal(e))
}

/// What a batch records as the extension owner: one audit row per acted-on row (`$5` keys and
/// `$6` data, parallel arrays) and the policy's new state.
const BOOKKEEPING: &str = "
WITH audit AS (
    INSERT INTO lifecycle.audit_log (policy, relation, row_key, action, data)
    SELECT $2, $3, u.k, $4, u.d FROM unnest($5::text[], $6::jsonb[]) AS u(k, d))
UPDATE lifecycle.policy_state
   SET cursor = CASE WHEN $7 THEN NULL ELSE $8::jsonb END,
       sweep_started_at = CASE WHEN cursor IS NULL THEN now() ELSE sweep_started_at END,
       last_run_at = now(), last_acted = $9, total_acted = total_acted + $9,
       total_blocked = total_blocked + $10, batches = batches + 1, last_error = NULL
 WHERE policy_id = $1";

/// A value of the current SPI result passed on as a parameter as is (no conversion).
fn raw_arg<'a>(value: Option<pg_sys::Datum>, type_oid: pg_sys::Oid) -> DatumWithOid<'a> {
    match value {
        // SAFETY: the value belongs to the SPI connection the next statement runs in, and
        // `type_oid` is its declared type in the statement that produced it.
        Some(datum) => unsafe { DatumWithOid::new(datum, type_oid) },
        None => DatumWithOid::null_oid(type_oid),
    }
}

