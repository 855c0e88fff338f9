//! Legal holds: placing and releasing them (lifecycle.add_hold, lifecycle.release_hold), and
//! the test a batch applies to every candidate row (`HoldSet::matches`).
//!
//! A hold names a table and either one row (its key, in the text form audit_log.row_key uses)
//! or a filter over the row (checked like a policy's filter). Placing and releasing need the
//! table's ownership as well as EXECUTE (lifecycle_operator), and both are audited: an app
//! role can neither lift a hold nor place one to keep data it was told to delete.

use super::filter::{check_filter, Reach};
use super::policy::{check_relation, primary_key};
use crate::error::{self, Code};
use crate::role;
use crate::sql::{self, col};
use pgrx::prelude::*;

/// The holds in force on one table (and one key shape): what a batch reads of them.
pub struct HoldSet {
    pub relid: pg_sys::Oid,
    key_columns: Vec<String>,
    keys: Vec<String>,
    filters: Vec<String>,
}

/// The row key of row `alias` in the text form audit rows and holds use: a single key's text,
/// or a composite key as a JSON array of its values in key order (docs/reaping.md).
pub fn row_key(alias: &str, key_columns: &[String]) -> String {
    if key_columns.len() == 1 {
        format!("{}::text", col(alias, &key_columns[0]))
    } else {
        let parts: Vec<String> = key_columns.iter().map(|k| col(alias, k)).collect();
        format!("jsonb_build_array({})::text", parts.join(", "))
    }
}

impl HoldSet {
    /// Whether row `alias` of this table is held: its key is held, or a hold's filter is true.
    /// Filters name the table's columns bare; `alias` is the innermost table where this runs.
    pub fn matches(&self, alias: &str) -> String {
        let mut tests = Vec::new();
        if !self.keys.is_empty() {
            let keys: Vec<String> = self.keys.iter().map(|k| sql::literal(k)).collect();
            tests.push(format!("{} = ANY (ARRAY[{}]::text[])", row_key(alias, &self.key_columns), keys.join(", ")));
        }
        tests.extend(self.filters.iter().map(|f| format!("coalesce(({f}), false)")));
        format!("({})", tests.join(" OR "))
    }
}

impl HoldSet {
    /// The set as a worker needs it (shards.rs): the table by the coordinator's OID, which
    /// the policy's definition uses too.
    pub fn definition(&self) -> serde_json::Value {
        serde_json::json!({"relid": self.relid.to_u32(), "key_columns": self.key_columns, "keys": self.keys, "filters": self.filters})
    }

    /// The set of `definition`, or None when it is not one.
    pub fn from_definition(definition: &serde_json::Value) -> Option<HoldSet> {
        let texts =
            |v: &serde_json::Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|t| t.as_str().map(str::to_string)).collect() };
        Some(HoldSet {
            relid: pg_sys::Oid::from(definition["relid"].as_u64()? as u32),
            key_columns: texts(&definition["key_columns"])?,
            keys: texts(&definition["keys"])?,
            filters: texts(&definition["filters"])?,
        })
    }
}

/// Every hold in force now, by table. Read as the extension's owner (`owner`, which the
/// caller has looked up already): holds (and their reasons) are not readable by policy owners.
pub fn live(owner: pg_sys::Oid) -> Vec<HoldSet> {
    role::run_as(owner, false, || {
        Spi::connect_mut(|client| {
            sql::run_kept(client, false, "SELECT relation::oid, key_columns::text[], keys, filters FROM lifecycle.live_holds", &[], None)?
                .map(|row| {
                    Ok(HoldSet {
                        relid: row.get(1)?.unwrap_or_default(),
                        key_columns: row.get(2)?.unwrap_or_default(),
                        keys: row.get(3)?.unwrap_or_default(),
                        filters: row.get(4)?.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| error::internal(e))
}

/// `key` in the form a batch compares with: cast to the key's types (22P02 and friends for a
/// value that is not one), a composite key given as a JSON array of one value per column.
fn normalized_key(key: &str, relation: &str, types: &[String]) -> String {
    let select = if types.len() == 1 {
        format!("SELECT ($1::{})::text", types[0])
    } else {
        let valid = Spi::get_one_with_args::<bool>(
            "SELECT jsonb_typeof(j) = 'array' AND jsonb_array_length(j) = $2 FROM (SELECT $1::jsonb AS j) k",
            &[key.into(), (types.len() as i32).into()],
        );
        if !matches!(valid, Ok(Some(true))) {
            error::invalid_argument(
                format!("key {} does not fit the primary key of {relation}", sql::literal(key)),
                &format!("The key is composite: give a JSON array of its {} values in key order, e.g. '[\"a\", 1]'.", types.len()),
            );
        }
        let parts: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("($1::jsonb ->> {i})::{t}")).collect();
        format!("SELECT jsonb_build_array({})::text", parts.join(", "))
    };
    Spi::get_one_with_args::<String>(&select, &[key.into()]).unwrap_or_else(|e| error::internal(e)).unwrap_or_default()
}

/// Writes an audit row for a hold (policy NULL), as the extension's owner.
fn audit(relation: &str, hold_id: i64, action: &str) {
    Spi::run("SELECT lifecycle._maintain_history()").unwrap_or_else(|e| error::internal(e));
    Spi::run_with_args(
        "INSERT INTO lifecycle.audit_log (policy, relation, row_key, action, data)
         SELECT NULL, $2, h.id::text, $3,
                jsonb_build_object('key', h.key, 'filter', h.filter, 'reason', h.reason, 'until', h.until,
                                   'placed_by', h.placed_by::text, 'released_by', h.released_by::text,
                                   'release_reason', h.release_reason)
           FROM lifecycle.holds h WHERE h.id = $1",
        &[hold_id.into(), relation.into(), action.into()],
    )
    .unwrap_or_else(|e| error::internal(e));
}

/// Places a hold on rows of `relation`: one row by `key`, or every row `filter` is true for.
/// Returns the hold's id. Called by lifecycle.add_hold (sql/compliance.sql), which takes the
/// table as a regclass. See docs/compliance.md.
#[pg_extern(schema = "lifecycle", name = "_add_hold")]
#[search_path(pg_catalog, pg_temp)]
fn add_hold(
    relation: Option<pg_sys::Oid>,
    key: Option<&str>,
    filter: Option<&str>,
    reason: Option<&str>,
    until: Option<TimestampWithTimeZone>,
) -> i64 {
    role::extension_owner();
    let relid = relation.unwrap_or_else(|| error::null_argument("relation", "Name the table whose rows are held."));
    let reason = reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| error::null_argument("reason", "Say why the rows are held, e.g. reason => 'case 2026-17'."));
    let relation = check_relation(relid, "place a hold on it");
    let key_columns = primary_key(relid, &relation);
    let key = match (key, filter) {
        (Some(k), None) => Some(normalized_key(k, &relation, &key_columns.iter().map(|c| c.type_name.clone()).collect::<Vec<_>>())),
        (None, Some(f)) => {
            check_filter(relid, &relation, f, Reach::Row);
            None
        }
        _ => error::invalid_argument(
            "a hold names a key or a filter, not both and not neither".into(),
            "E.g. add_hold('accounts', key => '42', reason => ...) or add_hold('accounts', filter => 'org_id = 7', reason => ...).",
        ),
    };
    let now = Spi::get_one::<TimestampWithTimeZone>("SELECT now()").ok().flatten();
    if until.is_some() && until <= now {
        error::invalid_argument("until must be in the future".into(), "Leave it out (NULL) for a hold kept until it is released.");
    }
    let placed_by = role::current();
    let names: Vec<String> = key_columns.iter().map(|c| c.name.clone()).collect();
    role::as_extension_owner(|| {
        let id = Spi::get_one_with_args::<i64>(
            "INSERT INTO lifecycle.holds (relation, key_columns, key, filter, reason, until, placed_by)
             VALUES ($1::oid::regclass, $2::name[], $3, $4, $5, $6, $7::oid::regrole) RETURNING id",
            &[relid.into(), names.into(), key.into(), filter.into(), reason.into(), until.into(), placed_by.into()],
        )
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or_else(|| error::internal("hold insert returned nothing"));
        audit(&relation, id, "hold");
        id
    })
}

/// Releases hold `hold_id`: the rows it held are reaped by the next sweep. Returns false if
/// it was already released.
#[pg_extern(schema = "lifecycle")]
#[search_path(pg_catalog, pg_temp)]
fn release_hold(hold_id: Option<i64>, reason: default!(Option<&str>, "NULL")) -> bool {
    role::extension_owner();
    let hold_id = hold_id.unwrap_or_else(|| error::null_argument("hold_id", "SELECT id FROM lifecycle.holds lists them."));
    let found = role::as_extension_owner(|| {
        sql::optional_row("SELECT relation::oid, released_at IS NOT NULL FROM lifecycle.holds WHERE id = $1", &[hold_id.into()], |row| {
            Ok((row.get::<pg_sys::Oid>(1)?.unwrap_or_default(), row.get::<bool>(2)?.unwrap_or(false)))
        })
    });
    let Some((relid, released)) = found else {
        error::raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("hold {hold_id} does not exist"),
            None,
            Some("SELECT id FROM lifecycle.holds lists them."),
        )
    };
    let relation = check_relation(relid, "release a hold on it");
    if released {
        return false;
    }
    let released_by = role::current();
    role::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE lifecycle.holds SET released_at = now(), released_by = $2::oid::regrole, release_reason = $3 WHERE id = $1",
            &[hold_id.into(), released_by.into(), reason.into()],
        )
        .unwrap_or_else(|e| error::internal(e));
        audit(&relation, hold_id, "release");
    });
    true
}
