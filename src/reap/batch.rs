//! One batch of one policy: pick due rows by keyset cursor, act on them, audit, move the cursor.
//!
//! Cost is O(batch): the candidate scan starts at the persisted cursor `[time, key...]` on the
//! time index instead of rescanning from the oldest row, so rows already reaped (dead tuples)
//! and rows passed over (blocked by children, locked by the app) are not read again in the same
//! sweep. `(time, key...)` ordering makes equal timestamps at a batch boundary neither skipped nor
//! processed twice. A sweep ends when a batch comes back short; the next one starts from the
//! oldest due row again, which is how skipped rows are retried.

use super::children;
use super::holds::{self, HoldSet};
use super::kinds::TimeKind;
use super::lifespan::Lifespan;
pub use super::model::Column;
use super::order::{self, Blocks};
use super::{archive, policy, shards};
use crate::error::{self, Code};
use crate::limits::{BATCH_MAX, BATCH_MIN};
use crate::role;
use crate::sql::{self, col, ident};
use pgrx::datum::DatumWithOid;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Distinguishes our advisory locks from the application's (two-int4 key space: "LCyc").
/// With a policy's id: its reaper; with -1: the maker of a history partition (sql/history.sql,
/// lifecycle._create_history_partition, spells it 1279490403).
const ADVISORY_LOCK_CLASS: i32 = 0x4c43_7963;

/// The rows of a physical batch: those from row `$1` to before row `$4`, the first rows of two
/// blocks, read by a TID Range Scan.
const PHYSICAL_RANGE: &str = "t.ctid >= $1::tid AND t.ctid < $4::tid";

/// The plan every batch statement gets, whatever the planner's estimates say. Left to its
/// estimates, a large LIMIT over a large backlog made the planner read every due row with a
/// bitmap scan and sort them all (on disk) to return one batch; with an ordered scan of the
/// time index (equal times ordered by key in an incremental sort of just those rows) a batch
/// reads O(batch) rows. The same holds for the children: one index probe per key, never a
/// hash of a whole child table. The plan is generic (the limit is a parameter), so one plan
/// serves every batch size, adaptive ones included. JIT is off: the disabled paths' costs
/// would otherwise cross jit_above_cost and compile every batch (~0.5 s each).
const PLAN_SHAPE: &[(&std::ffi::CStr, &str)] = &[
    (c"plan_cache_mode", "force_generic_plan"),
    (c"jit", "off"),
    (c"enable_seqscan", "off"),
    (c"enable_bitmapscan", "off"),
    (c"enable_sort", "off"),
    (c"enable_hashjoin", "off"),
    (c"enable_mergejoin", "off"),
    (c"enable_hashagg", "off"),
];

/// Runs `work` (which plans and runs batch statements) under [`PLAN_SHAPE`].
pub fn with_batch_plan_shape<R>(work: impl FnOnce() -> R) -> R {
    sql::with_settings(PLAN_SHAPE, work)
}

/// What happens to a child when its parent row is acted on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Deleted with the row, in the same statement.
    Delete,
    /// Keeps the row while it references it.
    Block,
    /// Deleted by its foreign key's ON DELETE CASCADE: only a hold on it matters to a batch.
    Cascade,
}

impl Handling {
    /// Its name, as lifecycle._policy_children and a policy's definition write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Handling::Delete => "delete",
            Handling::Block => "block",
            Handling::Cascade => "cascade",
        }
    }

    pub fn parse(name: &str) -> Option<Handling> {
        [Handling::Delete, Handling::Block, Handling::Cascade].into_iter().find(|h| h.as_str() == name)
    }
}

/// A table whose rows reference the policy's rows: `columns` (of the child) equal
/// `parent_columns` (of the policy's table).
#[derive(Clone)]
pub struct Child {
    pub(super) relid: pg_sys::Oid,
    pub(super) relation: String,
    pub(super) columns: Vec<String>,
    pub(super) parent_columns: Vec<String>,
    pub(super) handling: Handling,
}

/// `column = value` (SQL) of an updating policy; `guard`: the value is a constant, so a row
/// that already holds it is not due (a row is due only while the action would change it).
#[derive(Clone)]
pub struct Assignment {
    pub column: String,
    pub value: String,
    pub guard: bool,
}

/// What an updating policy does: nullify columns, or set them to values.
#[derive(Clone)]
pub struct Update {
    /// "nullify" or "set", as audit rows name the action.
    pub action: &'static str,
    pub assignments: Vec<Assignment>,
}

impl Update {
    fn nullify(columns: Vec<String>) -> Update {
        Update {
            action: "nullify",
            assignments: columns.into_iter().map(|column| Assignment { column, value: "NULL".into(), guard: true }).collect(),
        }
    }

    /// From lifecycle.policies.set_to / a definition: `[[column, value, guard], ...]`.
    fn set(entries: &Value) -> Option<Update> {
        let assignments = entries
            .as_array()?
            .iter()
            .map(|e| Some(Assignment { column: e[0].as_str()?.into(), value: e[1].as_str()?.into(), guard: e[2].as_bool()? }))
            .collect::<Option<Vec<_>>>()?;
        Some(Update { action: "set", assignments })
    }

    fn as_json(&self) -> Value {
        json!({"action": self.action, "assignments": self.assignments.iter().map(|a| json!([a.column, a.value, a.guard])).collect::<Vec<_>>()})
    }

    fn from_json(v: &Value) -> Option<Update> {
        let mut update = Update::set(&v["assignments"])?;
        if v["action"].as_str()? == "nullify" {
            update.action = "nullify";
        }
        Some(update)
    }

    /// The SET list.
    fn sets(&self) -> String {
        self.assignments.iter().map(|a| format!("{} = {}", ident(&a.column), a.value)).collect::<Vec<_>>().join(", ")
    }

    /// Whether row `t` would change: one guarded column differs from its value.
    fn would_change(&self) -> String {
        let tests: Vec<String> = self
            .assignments
            .iter()
            .filter(|a| a.guard)
            .map(|a| {
                if a.value == "NULL" {
                    format!("{} IS NOT NULL", col("t", &a.column))
                } else {
                    format!("{} IS DISTINCT FROM ({})", col("t", &a.column), a.value)
                }
            })
            .collect();
        format!("({})", tests.join(" OR "))
    }
}

/// A policy as a batch needs it, with table names resolved now (renames are followed).
pub struct Policy {
    pub id: i32,
    pub name: String,
    pub owner: pg_sys::Oid,
    pub relation: String,
    keys: Vec<Column>,
    /// The time column (its name empty for a computed time) and the time's type.
    time: Column,
    /// A computed time: an IMMUTABLE expression over the row, in place of the column.
    time_expression: Option<String>,
    time_kind: TimeKind,
    older_than: Option<Interval>,
    /// In place of older_than: a lifespan read per group from settings tables.
    lifespan: Option<Lifespan>,
    /// For a `timestamp` column: the zone its times are in (None: the session's TimeZone).
    time_zone: Option<String>,
    filter: Option<String>,
    /// keep_newest and keep_per: the newest N rows of each group are not due.
    keep: Option<(i32, Vec<String>)>,
    /// keep_per's columns with their types: the groups a keep_newest batch walks.
    keep_groups: Vec<Column>,
    /// What an updating policy sets (nullify or set_to); None: it deletes.
    update: Option<Update>,
    pub(super) children: Vec<Child>,
    audit: Option<Vec<String>>,
    batch_size: i32,
    pub(super) target_batch_time: Option<Duration>,
    pub(super) current_batch: Option<i32>,
    pub cursor: Option<String>,
    partitioned: bool,
    pub(super) relid: pg_sys::Oid,
    /// The archive table and the columns copied into it.
    pub(super) archive: Option<(String, Vec<String>)>,
    /// With events on: the columns each event carries.
    pub(super) events: Option<Vec<String>>,
    /// The holds in force on this table and on the children a delete reaches.
    holds: Vec<HoldSet>,
    /// The extension's owner, who writes the bookkeeping.
    pub(super) bookkeeper: pg_sys::Oid,
    /// A Citus reference (or local) table: batches take two statements (`reference_statements`).
    pub(super) reference: bool,
    /// Where a sweep in physical order is (order.rs); None: the sweep is in time order.
    physical: Option<Blocks>,
}

/// Columns of a LOAD row as names (at `names`) and their types (at `types`), pairwise.
fn columns(row: &pgrx::spi::SpiTupleTable, names: usize, types: usize) -> Result<Vec<Column>, pgrx::spi::Error> {
    let names: Vec<String> = row.get(names)?.unwrap_or_default();
    let types: Vec<String> = row.get(types)?.unwrap_or_default();
    Ok(names.into_iter().zip(types).map(|(name, type_name)| Column { name, type_name }).collect())
}

/// One row per batch.
const LOAD: &str = "
SELECT p.id, p.name, p.owner::oid,
       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
       p.key_columns::text[], p.key_types, p.time_column::text, p.time_type, p.time_kind, p.older_than,
       p.filter, p.nullify_columns::text[], p.audit_columns::text[], p.batch_size,
       (extract(epoch FROM p.target_batch_time) * 1000000)::bigint, s.current_batch, s.cursor::text,
       c.oid IS NOT NULL, c.relkind = 'p',
       p.dependents <> 'none' OR EXISTS (SELECT 1 FROM lifecycle.policy_children pc WHERE pc.policy_id = p.id),
       p.relation::oid, p.archive IS NOT NULL,
       pg_catalog.quote_ident(an.nspname) || '.' || pg_catalog.quote_ident(ac.relname), p.archive_columns::text[],
       p.events, p.event_columns::text[],
       p.xmin::text || '/' || p.ctid::text, p.time_zone, p.set_to::text,
       p.time_expression, p.keep_newest, p.keep_per::text[], p.lifespan, p.lifespan_per::text[],
       (SELECT array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY u.ord)
          FROM unnest(p.lifespan_per) WITH ORDINALITY AS u(name, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = p.relation AND a.attname = u.name),
       (SELECT array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY u.ord)
          FROM unnest(p.keep_per) WITH ORDINALITY AS u(name, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = p.relation AND a.attname = u.name),
       CASE WHEN c.oid IS NOT NULL THEN lifecycle._policy_type_change(p.id) END
  FROM lifecycle.policies p
  JOIN lifecycle.policy_state s ON s.policy_id = p.id
  LEFT JOIN pg_catalog.pg_class c ON c.oid = p.relation
  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_class ac ON ac.oid = p.archive
  LEFT JOIN pg_catalog.pg_namespace an ON an.oid = ac.relnamespace
 WHERE p.id = $1";

impl Policy {
    /// Loads a policy and checks that the caller may act for its owner.
    pub fn load(id: i32) -> Policy {
        // First: it also checks that the tables have this library's shape.
        let bookkeeper = role::extension_owner();
        let found = sql::optional_row(LOAD, &[id.into()], |row| {
            if !row.get::<bool>(18)?.unwrap_or(false) {
                let name = row.get::<String>(2)?.unwrap_or_default();
                error::raise(
                    Code::ERRCODE_UNDEFINED_TABLE,
                    format!("the table of policy {name} no longer exists"),
                    None,
                    Some("Drop the policy with lifecycle.drop_policy, or register it again on the new table."),
                );
            }
            if row.get::<bool>(22)?.unwrap_or(false) && row.get::<String>(23)?.is_none() {
                let name = row.get::<String>(2)?.unwrap_or_default();
                error::raise(
                    Code::ERRCODE_UNDEFINED_TABLE,
                    format!("the archive table of policy {name} no longer exists"),
                    None,
                    Some("Create it again (lifecycle.create_archive), or register the policy again without it: nothing is deleted unarchived."),
                );
            }
            if let Some(change) = row.get::<String>(37)? {
                let name = row.get::<String>(2)?.unwrap_or_default();
                error::raise(
                    Code::ERRCODE_DATATYPE_MISMATCH,
                    format!("policy {name}: {change} since it was registered"),
                    None,
                    Some("Its rule and cursor read the types it was registered with: register it again (lifecycle.drop_policy, lifecycle.add_policy), or change the column back."),
                );
            }
            Ok((
                Policy {
                    id: row.get(1)?.unwrap_or_default(),
                    name: row.get(2)?.unwrap_or_default(),
                    owner: row.get(3)?.unwrap_or_default(),
                    relation: row.get(4)?.unwrap_or_default(),
                    keys: columns(row, 5, 6)?,
                    time: Column { name: row.get(7)?.unwrap_or_default(), type_name: row.get(8)?.unwrap_or_default() },
                    time_expression: row.get(30)?,
                    // The table's CHECK admits only the kinds TimeKind names.
                    time_kind: row
                        .get::<String>(9)?
                        .as_deref()
                        .and_then(TimeKind::parse)
                        .unwrap_or_else(|| error::internal("lifecycle.policies holds an unknown time_kind")),
                    older_than: row.get(10)?,
                    lifespan: match row.get::<String>(33)? {
                        Some(expression) => Some(Lifespan { expression, per: columns(row, 34, 35)? }),
                        None => None,
                    },
                    time_zone: row.get(28)?,
                    filter: row.get(11)?,
                    keep_groups: columns(row, 32, 36)?,
                    keep: match row.get::<i32>(31)? {
                        Some(newest) => Some((newest, row.get(32)?.unwrap_or_default())),
                        None => None,
                    },
                    update: match (row.get::<Vec<String>>(12)?, row.get::<String>(29)?) {
                        (Some(columns), _) => Some(Update::nullify(columns)),
                        (None, Some(set_to)) => Some(
                            serde_json::from_str(&set_to)
                                .ok()
                                .and_then(|v: Value| Update::set(&v))
                                .unwrap_or_else(|| error::internal("lifecycle.policies holds a malformed set_to")),
                        ),
                        (None, None) => None,
                    },
                    audit: row.get(13)?,
                    batch_size: row.get(14)?.unwrap_or(BATCH_MIN),
                    target_batch_time: row.get::<i64>(15)?.map(|us| Duration::from_micros(us.max(1) as u64)),
                    current_batch: row.get(16)?,
                    cursor: row.get(17)?,
                    partitioned: row.get(19)?.unwrap_or(false),
                    children: Vec::new(),
                    bookkeeper,
                    relid: row.get(21)?.unwrap_or_default(),
                    archive: match row.get::<String>(23)? {
                        Some(table) => Some((table, row.get(24)?.unwrap_or_default())),
                        None => None,
                    },
                    events: if row.get::<bool>(25)?.unwrap_or(false) { Some(row.get(26)?.unwrap_or_default()) } else { None },
                    holds: Vec::new(),
                    reference: false,
                    physical: None,
                },
                row.get::<bool>(20)?.unwrap_or(false),
                row.get::<String>(27)?.unwrap_or_default(),
            ))
        });
        let (mut policy, has_children, version) = found
            .unwrap_or_else(|| error::raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("policy with id {id} does not exist"), None, None));
        check_may_act(policy.owner, &policy.name);
        policy.physical = policy.cursor.as_deref().and_then(Blocks::of_cursor);
        let holds = holds::live(policy.bookkeeper);
        if has_children || holds.iter().any(|h| h.relid != policy.relid) {
            policy.children = children::of_policy(id, &version, policy.relid);
        }
        // Only the holds on this table and on children the delete reaches.
        policy.holds = holds
            .into_iter()
            .filter(|h| h.relid == policy.relid || policy.children.iter().any(|c| c.relid == h.relid && c.handling != Handling::Block))
            .collect();
        policy
    }

    /// What a worker needs to run this policy's batches on a shard (shards.rs), as `load`
    /// resolved it: names as the coordinator knows them (the worker maps them to its shards),
    /// the owner by name (roles are the same on every node, their OIDs are not).
    pub fn definition(&self) -> Value {
        let owner = sql::optional_row("SELECT $1::oid::regrole::text", &[self.owner.into()], |row| row.get::<String>(1)).flatten();
        let column = |c: &Column| json!([c.name, c.type_name]);
        json!({
            "id": self.id,
            "name": self.name,
            "owner": owner,
            "relation": self.relation,
            "relid": self.relid.to_u32(),
            "keys": self.keys.iter().map(column).collect::<Vec<_>>(),
            "time": column(&self.time),
            "time_expression": self.time_expression,
            "time_kind": self.time_kind.as_str(),
            "older_than": self.older_than.map(|i| json!([i.months(), i.days(), i.micros()])),
            "time_zone": self.time_zone,
            "filter": self.filter,
            "keep": self.keep.as_ref().map(|(newest, per)| json!([newest, per])),
            "update": self.update.as_ref().map(Update::as_json),
            "audit": self.audit,
            "partitioned": self.partitioned,
            "children": self.children.iter().map(|c| json!({
                "relation": c.relation,
                "relid": c.relid.to_u32(),
                "columns": c.columns,
                "parent_columns": c.parent_columns,
                "handling": c.handling.as_str(),
            })).collect::<Vec<_>>(),
            "holds": self.holds.iter().map(HoldSet::definition).collect::<Vec<_>>(),
        })
    }

    /// The policy of `definition` (from [`Policy::definition`]) acting on the tables `shard_of`
    /// maps its tables' names to; no cursor, no archive and no events (shards.rs refuses them).
    pub fn from_definition(definition: &Value, shard_of: impl Fn(&str) -> String) -> Policy {
        let bad = || -> ! { error::invalid_argument("malformed policy definition".into(), "It is what Policy::definition writes.") };
        let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| bad());
        let texts = |v: &Value| -> Option<Vec<String>> { v.as_array().map(|a| a.iter().map(text).collect()) };
        let oid = |v: &Value| pg_sys::Oid::from(v.as_u64().unwrap_or_else(|| bad()) as u32);
        let column = |v: &Value| Column { name: text(&v[0]), type_name: text(&v[1]) };
        let owner = text(&definition["owner"]);
        let owner = sql::optional_row("SELECT $1::regrole::oid", &[owner.as_str().into()], |row| row.get::<pg_sys::Oid>(1))
            .flatten()
            .unwrap_or_else(|| bad());
        let relation = text(&definition["relation"]);
        Policy {
            id: definition["id"].as_i64().unwrap_or_else(|| bad()) as i32,
            name: text(&definition["name"]),
            owner,
            relation: shard_of(&relation),
            keys: definition["keys"].as_array().unwrap_or_else(|| bad()).iter().map(column).collect(),
            time: column(&definition["time"]),
            time_expression: definition["time_expression"].as_str().map(str::to_string),
            time_kind: TimeKind::parse(&text(&definition["time_kind"])).unwrap_or_else(|| bad()),
            older_than: definition["older_than"].as_array().map(|i| {
                Interval::new(
                    i[0].as_i64().unwrap_or_default() as i32,
                    i[1].as_i64().unwrap_or_default() as i32,
                    i[2].as_i64().unwrap_or_default(),
                )
                .unwrap_or_else(|_| bad())
            }),
            // add_policy refuses a lifespan on Citus tables.
            lifespan: None,
            time_zone: definition["time_zone"].as_str().map(str::to_string),
            filter: definition["filter"].as_str().map(str::to_string),
            // add_policy refuses keep_newest on Citus tables.
            keep_groups: Vec::new(),
            keep: definition["keep"]
                .as_array()
                .map(|k| (k[0].as_i64().unwrap_or_else(|| bad()) as i32, texts(&k[1]).unwrap_or_else(|| bad()))),
            update: if definition["update"].is_null() {
                None
            } else {
                Some(Update::from_json(&definition["update"]).unwrap_or_else(|| bad()))
            },
            audit: texts(&definition["audit"]),
            partitioned: definition["partitioned"].as_bool().unwrap_or(false),
            relid: oid(&definition["relid"]),
            children: definition["children"]
                .as_array()
                .unwrap_or_else(|| bad())
                .iter()
                .map(|c| Child {
                    relation: shard_of(&text(&c["relation"])),
                    relid: oid(&c["relid"]),
                    columns: texts(&c["columns"]).unwrap_or_else(|| bad()),
                    parent_columns: texts(&c["parent_columns"]).unwrap_or_else(|| bad()),
                    handling: Handling::parse(&text(&c["handling"])).unwrap_or_else(|| bad()),
                })
                .collect(),
            holds: definition["holds"]
                .as_array()
                .unwrap_or_else(|| bad())
                .iter()
                .map(|h| HoldSet::from_definition(h).unwrap_or_else(|| bad()))
                .collect(),
            batch_size: BATCH_MIN,
            target_batch_time: None,
            current_batch: None,
            cursor: None,
            archive: None,
            events: None,
            bookkeeper: role::extension_owner(),
            reference: false,
            physical: None,
        }
    }

    /// Whether the time column is the whole key (a ULID key): the cursor is then the key.
    fn same_time_and_key(&self) -> bool {
        self.time_expression.is_none() && self.keys.len() == 1 && self.keys[0].name == self.time.name
    }

    /// The time of row `t`: its column, or the computed time (unqualified column names,
    /// which the candidate row's scope resolves).
    fn time_of_row(&self) -> String {
        match &self.time_expression {
            Some(expression) => format!("({expression})"),
            None => col("t", &self.time.name),
        }
    }

    /// A ULID time stored as uuid: it has its own floor function, and no max().
    fn time_is_uuid(&self) -> bool {
        self.time.type_name == "uuid"
    }

    /// The time as an index definition prints it (pg_get_indexdef): the column, quoted where
    /// it needs quotes, or the computed time's expression as PostgreSQL deparses it.
    pub fn time_as_indexed(&self) -> String {
        match &self.time_expression {
            Some(expression) => super::computed::deparsed(self.relid, &self.relation, expression),
            None => ident(&self.time.name),
        }
    }

    /// The due predicate over alias `t`: rule, time kind, "never" values, nullify, filter.
    /// `$3` is `older_than`; a lifespan is read for the row's own group.
    pub fn due(&self) -> String {
        let reference = match &self.lifespan {
            Some(lifespan) => format!("(now() - {})", lifespan.of_row()),
            None => self.fixed_reference().into(),
        };
        self.due_against(&reference, true)
    }

    /// The reference of an older_than or expiry rule (`due` without a lifespan).
    fn fixed_reference(&self) -> &'static str {
        if self.older_than.is_some() {
            "(now() - $3::interval)"
        } else {
            "now()"
        }
    }

    /// The due predicate with the time compared with `reference` (a timestamptz: a row is
    /// due when its time is before it, or at it for an expiry time); `with_keep`: with
    /// keep_newest's look at the row's newer rows (a walk reads its group's bound instead).
    fn due_against(&self, reference: &str, with_keep: bool) -> String {
        let t = self.time_of_row();
        let op = if self.older_than.is_some() || self.lifespan.is_some() { "<" } else { "<=" };
        let mut due = match self.time_kind {
            TimeKind::Timestamptz => format!("{t} {op} {reference}"),
            // The zone is a literal: it was checked at registration (add_policy), and as a
            // parameter it would renumber every statement's parameters for one time kind.
            TimeKind::Timestamp => {
                let zone = self.time_zone.as_deref().map_or("pg_catalog.current_setting('TimeZone')".into(), sql::literal);
                format!("{t} {op} ({reference} AT TIME ZONE {zone})")
            }
            TimeKind::UnixMs => format!("{t} > 0 AND {t} {op} pg_catalog.floor(extract(epoch FROM {reference}) * 1000)::bigint"),
            TimeKind::UnixS => format!("{t} > 0 AND {t} {op} pg_catalog.floor(extract(epoch FROM {reference}))::bigint"),
            TimeKind::Ulid if self.time_is_uuid() => format!("{t} < lifecycle.ulid_floor({reference})"),
            TimeKind::Ulid => format!("{t} < lifecycle.ulid_floor_text({reference})"),
        };
        if let Some(update) = &self.update {
            due.push_str(&format!(" AND {}", update.would_change()));
        }
        if let Some(filter) = &self.filter {
            due.push_str(&format!(" AND {}", super::filter::spliced(&self.relation, filter)));
        }
        if let Some((newest, per)) = self.keep.as_ref().filter(|_| with_keep) {
            let keys: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
            let newer = super::keep::condition(&self.relation, &keys, &self.time.name, per, *newest);
            due.push_str(&format!(" AND {newer}"));
        }
        due
    }

    /// The groups a batch walks (groups.rs): a lifespan's lifespan_per, or keep_newest's
    /// keep_per. None: the batch walks the time index.
    fn walked_groups(&self) -> Option<&[Column]> {
        match &self.lifespan {
            Some(lifespan) if !lifespan.per.is_empty() => Some(&lifespan.per),
            _ => Some(self.keep_groups.as_slice()).filter(|g| !g.is_empty()),
        }
    }

    /// The group columns that lead the cursor (none but a walk's).
    fn group_columns(&self) -> &[Column] {
        self.walked_groups().unwrap_or_default()
    }

    /// The key columns after the time, in the cursor's order (none for a ULID key).
    fn keys_after_time(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.name.clone()).filter(|k| self.time_expression.is_some() || *k != self.time.name).collect()
    }

    /// The columns the cursor orders by: the walked group's, then time, then every key column.
    fn cursor_columns(&self) -> Vec<&Column> {
        let own: Vec<&Column> =
            if self.same_time_and_key() { vec![&self.keys[0]] } else { std::iter::once(&self.time).chain(self.keys.iter()).collect() };
        self.group_columns().iter().chain(own).collect()
    }

    /// The cursor's value at position `i` (of column `c`). Each is a scalar subquery, so it
    /// is parsed and cast once per batch, not once per candidate row.
    fn cursor_bound(i: usize, c: &Column) -> String {
        format!("(SELECT ($1::jsonb ->> {i})::{})", c.type_name)
    }

    /// Keyset position after `$1` (the cursor as jsonb text `[group..., time, key1, ...]`).
    /// `first >= bound` is spelled out beside the row comparison so that the index has a
    /// range to scan whatever it covers.
    fn after_cursor(&self) -> String {
        if self.same_time_and_key() && self.walked_groups().is_none() {
            return format!("{} > {}", col("t", &self.keys[0].name), Self::cursor_bound(1, &self.keys[0]));
        }
        let columns = self.cursor_columns();
        let row = self.cursor_values();
        let bounds: Vec<String> = columns.iter().enumerate().map(|(i, c)| Self::cursor_bound(i, c)).collect();
        format!("{} >= {} AND ({}) > ({})", row[0], bounds[0], row.join(", "), bounds.join(", "))
    }

    /// The cursor columns of row `t` in keyset order (`ORDER BY`), within one walked group.
    fn order(&self) -> String {
        self.cursor_values()[self.group_columns().len()..].join(", ")
    }

    /// What row `t` has in the cursor's places: its walked group's columns, its time (column
    /// or computed), then its key.
    fn cursor_values(&self) -> Vec<String> {
        let group = self.group_columns().iter().map(|c| col("t", &c.name));
        if self.same_time_and_key() {
            return group.chain(std::iter::once(col("t", &self.keys[0].name))).collect();
        }
        group.chain(std::iter::once(self.time_of_row())).chain(self.keys.iter().map(|k| col("t", &k.name))).collect()
    }

    /// The row's key as audit, events, holds and preview show it (holds::row_key).
    fn row_key(&self, alias: &str) -> String {
        let names: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        holds::row_key(alias, &names)
    }

    /// Columns of the policy's table that a batch carries from its candidates to its actions:
    /// the key, then whatever else a deleted child references. Aliased `v0, v1, ...`.
    pub(super) fn carried(&self) -> Vec<String> {
        let mut carried: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        for child in self.children.iter().filter(|c| c.handling == Handling::Delete) {
            for p in &child.parent_columns {
                if !carried.contains(p) {
                    carried.push(p.clone());
                }
            }
        }
        carried
    }

    fn carried_alias(&self, column: &str) -> String {
        let i = self.carried().iter().position(|c| c == column).unwrap_or_default();
        format!("v{i}")
    }

    /// Whether rows can be blocked: some child keeps its parent.
    fn may_block(&self) -> bool {
        self.children.iter().any(|c| c.handling == Handling::Block)
    }

    /// Whether row `t` is under a legal hold, or a child its delete would remove is.
    fn held(&self) -> String {
        let mut tests = Vec::new();
        for set in &self.holds {
            if set.relid == self.relid {
                tests.push(set.matches("t"));
            }
            // Children a delete removes with the row (a nullify removes none).
            let removed = |c: &&Child| self.update.is_none() && c.relid == set.relid && c.handling != Handling::Block;
            for child in self.children.iter().filter(removed) {
                let pairs: Vec<String> =
                    child.columns.iter().zip(&child.parent_columns).map(|(c, p)| format!("{} = {}", col("h", c), col("t", p))).collect();
                tests.push(format!(
                    "EXISTS (SELECT 1 FROM {} h WHERE {} AND {} OFFSET 0)",
                    child.relation,
                    pairs.join(" AND "),
                    set.matches("h")
                ));
            }
        }
        if tests.is_empty() {
            "false".into()
        } else {
            tests.join(" OR ")
        }
    }

    /// Whether a blocking child still references row `t`. `OFFSET 0` keeps each test an index
    /// probe per candidate: without it the planner may hash the whole child table once per
    /// batch instead (it did, at 10k blocking rows: 2.5 ms of each 1000-row batch), which is
    /// O(child table), not O(batch). The same holds for the hold tests above.
    fn blocked(&self) -> String {
        let checks: Vec<String> = self
            .children
            .iter()
            .filter(|c| c.handling == Handling::Block)
            .map(|child| {
                let pairs: Vec<String> =
                    child.columns.iter().zip(&child.parent_columns).map(|(c, p)| format!("{} = {}", col("c", c), col("t", p))).collect();
                format!("EXISTS (SELECT 1 FROM {} c WHERE {} OFFSET 0)", child.relation, pairs.join(" AND "))
            })
            .collect();
        if checks.is_empty() {
            "false".into()
        } else {
            checks.join(" OR ")
        }
    }

    /// Candidate rows of the next batch, in keyset order, at most `$2`. For a preview they
    /// carry their row key and audit data and are not locked; for a batch they are locked,
    /// and the audit data is taken later from the acted-on rows.
    ///
    /// With groups to walk, this is what one group gives, inside the walk (groups.rs): the
    /// group is `grp`, with its own values read once (a lifespan's `span`, keep_newest's
    /// bound `b0...`), and a group with nothing due gives a marker row of NULLs.
    pub fn candidates(&self, preview: bool) -> String {
        self.candidates_locked(preview, !preview)
    }

    /// [`Policy::candidates`], locked or not (`lock`). In physical order they are the due rows
    /// of the batch's block range, all of them ([`PHYSICAL_RANGE`]).
    fn candidates_locked(&self, preview: bool, lock: bool) -> String {
        let carried: Vec<String> = self.carried().iter().enumerate().map(|(i, c)| format!("{} AS v{i}", col("t", c))).collect();
        let (row_key, audit) = if preview { (self.row_key("t"), self.audit_data()) } else { ("NULL::text".into(), "NULL::jsonb".into()) };
        let due = match self.walked_groups() {
            Some(groups) if self.lifespan.is_some() => {
                format!("{} AND {}", super::groups::in_current_group(groups), self.due_against("(now() - grp.span)", false))
            }
            Some(groups) => format!(
                "{} AND {} AND {}",
                super::groups::in_current_group(groups),
                self.due_against(self.fixed_reference(), false),
                super::keep::below_bound(&self.time.name, &self.keys_after_time())
            ),
            None => self.due(),
        };
        let mut sql = format!(
            "SELECT {carried}, {time} AS tm, t.ctid AS tid, {blocked} AS blocked, {held} AS held, {row_key} AS rk, {audit} AS data
               FROM {rel} t WHERE {due}",
            carried = carried.join(", "),
            time = self.time_of_row(),
            blocked = self.blocked(),
            held = self.held(),
            rel = self.relation,
        );
        if self.physical.is_some() {
            // The whole range: its size is the batch's (Blocks::end).
            sql.push_str(&format!(" AND {PHYSICAL_RANGE}"));
        } else {
            if self.cursor.is_some() {
                sql.push_str(&format!(" AND {}", self.after_cursor()));
            }
            sql.push_str(&format!(" ORDER BY {} LIMIT $2", self.order()));
        }
        if lock {
            sql.push_str(" FOR UPDATE OF t SKIP LOCKED");
        }
        let Some(groups) = self.walked_groups() else { return sql };
        // The walk starts at the cursor's group and time (the first column after the group).
        let start = self.cursor.as_ref().map(|_| {
            let columns = self.cursor_columns();
            let values = self.cursor_values();
            let n = groups.len() + 1;
            (values[..n].to_vec(), columns[..n].iter().enumerate().map(|(i, c)| Self::cursor_bound(i, c)).collect())
        });
        let per_group = |alias: &str| -> (String, String) {
            let group = super::groups::group_of(alias, groups);
            match (&self.lifespan, &self.keep) {
                (Some(lifespan), _) => (format!("{} AS span", lifespan.of_group(&group)), String::new()),
                (None, Some((newest, _))) => {
                    let bound = super::keep::bound(&self.relation, groups, &group, &self.time.name, &self.keys_after_time(), *newest);
                    ("kb.*".into(), format!("LEFT JOIN LATERAL ({bound}) kb ON true"))
                }
                (None, None) => error::internal("a walk without a per-group rule"),
            }
        };
        super::groups::walk(&self.relation, groups, &sql, start, per_group)
    }

    /// The CTEs that delete the children a delete takes with the rows of CTE `rows`.
    fn child_deletes(&self, rows: &str) -> Vec<String> {
        let deleted = self.children.iter().filter(|c| c.handling == Handling::Delete);
        deleted
            .enumerate()
            .map(|(i, child)| {
                let (using, cond) = self.matching("c", rows, &child.columns, &child.parent_columns);
                let using = if using.is_empty() { String::new() } else { format!(" USING {using}") };
                format!("child_{i} AS (DELETE FROM {} c{using} WHERE {cond})", child.relation)
            })
            .collect()
    }

    /// (`USING` list, `WHERE`) of a statement on the table aliased `alias` that matches the
    /// acted-on rows by `columns` = the carried `parent_columns`: one `= ANY` (an index probe
    /// per key) for a single column, a join with the batch for several.
    fn matching(&self, alias: &str, acted: &str, columns: &[String], parent_columns: &[String]) -> (String, String) {
        if columns.len() == 1 {
            // `= ANY (ARRAY(...))` rather than a join: the planner cannot see that `acted`
            // holds at most one batch.
            let v = self.carried_alias(&parent_columns[0]);
            (String::new(), format!("{} = ANY (ARRAY(SELECT {v} FROM {acted}))", col(alias, &columns[0])))
        } else {
            let pairs: Vec<String> =
                columns.iter().zip(parent_columns).map(|(c, p)| format!("{} = a.{}", col(alias, c), self.carried_alias(p))).collect();
            (format!("{acted} a"), pairs.join(" AND "))
        }
    }

    /// The whole batch as one statement: returns acted, examined, blocked, new cursor, audit.
    /// `lock`: the candidates are locked first (`FOR UPDATE SKIP LOCKED`), as a time-order
    /// batch always does. Without (physical order's plain statement) the action reads its
    /// block range itself, with the rule, and PostgreSQL rechecks the rule on the newest
    /// version of a row changed meanwhile; candidates are read first only to leave out rows
    /// that children block or holds keep, and children go with the rows the action took
    /// (`done`).
    fn statement(&self, lock: bool) -> String {
        let plain = !lock && self.physical.is_some();
        let filtered = self.may_block() || !self.holds.is_empty();
        // Physical order's plain statement with nothing to leave out: the action alone.
        let direct = plain && !filtered;
        let mut ctes = Vec::new();
        if !direct {
            ctes.push(format!("batch AS ({})", self.candidates_locked(false, !plain)));
        }
        // The rows to act on: all candidates, or those no child blocks (a second CTE, only
        // when there is something to filter).
        let acted = if filtered {
            // Not materialized: read by the action only, it is a filter over `batch` (already
            // materialized), not a second copy of the batch. A walk's marker rows (NULLs)
            // fail it too.
            ctes.push("acted AS NOT MATERIALIZED (SELECT * FROM batch WHERE NOT blocked AND NOT held)".into());
            "acted"
        } else if self.walked_groups().is_some() {
            ctes.push("acted AS NOT MATERIALIZED (SELECT * FROM batch WHERE tid IS NOT NULL)".into());
            "acted"
        } else {
            "batch"
        };
        let children = self.child_deletes(if plain { "done" } else { acted });
        if !plain {
            ctes.extend(children.iter().cloned());
        }
        // The candidates are locked FOR UPDATE above, so their ctids cannot change before the
        // action: a TID scan spares a second index probe per row. Not on partitioned tables,
        // where a ctid is only unique within one partition: there the key matches.
        let key_names: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        let (from, target) = if direct {
            (String::new(), format!("{} AND {}", PHYSICAL_RANGE, self.due()))
        } else if self.partitioned {
            self.matching("t", acted, &key_names, &key_names)
        } else {
            (String::new(), format!("t.ctid = ANY (ARRAY(SELECT tid FROM {acted}))"))
        };
        let target = if plain && !direct { format!("{target} AND {}", self.due()) } else { target };
        // The row key only when audit or events name the rows: it is built per row.
        let key = if self.audit.is_some() || self.events.is_some() { self.row_key("t") } else { "NULL::text".into() };
        let mut returning = format!("{key} AS k, {} AS data", self.audit_data());
        if let Some(columns) = &self.events {
            returning.push_str(&format!(", {} AS ev", sql::jsonb_of_columns("t", columns)));
        }
        if let Some((_, columns)) = &self.archive {
            for (i, c) in columns.iter().enumerate() {
                returning.push_str(&format!(", {} AS a{i}", col("t", c)));
            }
        }
        if plain {
            for (i, c) in self.carried().iter().enumerate() {
                returning.push_str(&format!(", {} AS v{i}", col("t", c)));
            }
        }
        match &self.update {
            None => {
                let using = if from.is_empty() { String::new() } else { format!(" USING {from}") };
                ctes.push(format!("done AS (DELETE FROM {rel} t{using} WHERE {target} RETURNING {returning})", rel = self.relation));
            }
            Some(update) => {
                let from = if from.is_empty() { String::new() } else { format!(" FROM {from}") };
                ctes.push(format!(
                    "done AS (UPDATE {rel} t SET {sets}{from} WHERE {target} RETURNING {returning})",
                    rel = self.relation,
                    sets = update.sets()
                ));
            }
        }
        if plain {
            ctes.extend(children);
        }
        // The archive rows are written by the batch's own statement, as the policy's owner
        // (the archive is the owner's table), in the same transaction as the deletes.
        if let Some((archive, columns)) = &self.archive {
            let names: Vec<String> = columns.iter().map(String::as_str).map(ident).collect();
            let values: Vec<String> = (0..columns.len()).map(|i| format!("d.a{i}")).collect();
            ctes.push(format!(
                "archived AS (INSERT INTO {archive} ({}, {}, {}) SELECT {}, {}, now() FROM done d)",
                names.join(", "),
                archive::POLICY_COLUMN,
                archive::TIME_COLUMN,
                values.join(", "),
                sql::literal(&self.name),
            ));
        }
        // What the batch saw: its candidates, or, acting directly, what it acted on.
        ctes.push(if direct {
            "seen AS (SELECT count(*) AS examined, 0::bigint AS blocked, 0::bigint AS held, NULL AS last, count(*) AS walked FROM done)"
                .into()
        } else {
            self.seen(&[])
        });
        let keys = if self.audit.is_some() || self.events.is_some() { "array_agg(d.k)" } else { "NULL::text[]" };
        let data = if self.audit.is_some() { "array_agg(d.data)" } else { "NULL::jsonb[]" };
        let events = if self.events.is_some() { "array_agg(d.ev)" } else { "NULL::jsonb[]" };
        // The audit rows leave as two arrays in the same order (one aggregate pass over the
        // acted-on rows), to be written by `run`.
        format!(
            "WITH {} SELECT a.acted, s.examined, s.blocked, {cursor}, a.keys, a.data, a.events, s.held, s.walked
               FROM (SELECT count(*) AS acted, {keys} AS keys, {data} AS data, {events} AS events FROM done d) a, seen s",
            ctes.join(", "),
            cursor = self.new_cursor()
        )
    }

    /// CTE `seen`, one row over CTE `batch`: its counts (examined, blocked, held), the last
    /// time in it (`last`) and `more` aggregates, in one pass over the batch.
    fn seen(&self, more: &[String]) -> String {
        let blocked = if self.may_block() { "count(*) FILTER (WHERE blocked AND NOT held)" } else { "0::bigint" };
        let held = if self.holds.is_empty() { "0::bigint" } else { "count(*) FILTER (WHERE held)" };
        let more: String = more.iter().map(|m| format!(", {m}")).collect();
        // PostgreSQL has no max(uuid) (a ULID key as uuid): there the last time is looked up.
        // A walk's batch numbers its rows in walk order (`wn`): its last row is the greatest.
        let last = if self.walked_groups().is_some() {
            "max(wn)"
        } else if self.time_is_uuid() {
            "(SELECT b.tm FROM batch b ORDER BY b.tm DESC LIMIT 1)"
        } else {
            "max(tm)"
        };
        // `tid` is NULL in a walk's marker rows only (groups with nothing due): not examined,
        // but walked.
        format!("seen AS (SELECT count(tid) AS examined, {blocked} AS blocked, {held} AS held, {last} AS last, count(*) AS walked{more} FROM batch)")
    }

    /// The new cursor, as jsonb text: the last row of CTE `batch` in keyset order, with CTE
    /// `seen` in scope. The batch comes in keyset order, so that row has the greatest time
    /// (`seen.last`, found in the one aggregate pass) and, among the rows of that time, the
    /// greatest key: only those few rows are ordered, not the batch (ordering all of it to
    /// take one row cost ~0.7 µs a row, a fifth of a 20000-row batch), and the row is turned
    /// into jsonb once.
    fn new_cursor(&self) -> String {
        if self.physical.is_some() {
            // The next range follows this one (Blocks::after_batch).
            return "NULL::text".into();
        }
        if let Some(groups) = self.walked_groups() {
            // The batch comes in cursor order, numbered (`wn`): its last row is the one
            // `seen.last` numbers. (Ordering the batch by (group, time, key) to find it cost
            // a quarter of a 10000-row batch: a realm's key is text.)
            let mut position: Vec<String> = (0..groups.len()).map(|i| format!("b.gr{i}")).collect();
            if !self.same_time_and_key() {
                position.push("b.tm".into());
            }
            position.extend((0..self.keys.len()).map(|i| format!("b.v{i}")));
            return format!("(SELECT jsonb_build_array({})::text FROM batch b WHERE b.wn = s.last)", position.join(", "));
        }
        if self.same_time_and_key() {
            return "jsonb_build_array(s.last, s.last)::text".into();
        }
        let position = self.keys.iter().enumerate().map(|(i, _)| format!("b.v{i}")).collect::<Vec<_>>().join(", ");
        let order = self.keys.iter().enumerate().map(|(i, _)| format!("b.v{i} DESC")).collect::<Vec<_>>().join(", ");
        format!("(SELECT jsonb_build_array(b.tm, {position})::text FROM batch b WHERE b.tm = s.last ORDER BY {order} LIMIT 1)")
    }

    /// A batch on a Citus reference table, in two statements, because Citus plans a
    /// modification of a reference table only alone, and without non-immutable functions in
    /// its RETURNING: (1) the candidates, locked, as on one server, returned as one array per
    /// carried column of the rows to act on, with the counts and the new cursor; (2) the
    /// children's deletes and the action matched by those arrays (`$8...`), which Citus applies
    /// to every copy of the table, returning what [`Policy::statement`] returns (`$4`..`$7`
    /// carry the first statement's counts and cursor through).
    fn reference_statements(&self) -> (String, String) {
        let n = self.carried().len();
        let arrays: Vec<String> = (0..n).map(|i| format!("array_agg(v{i}) FILTER (WHERE NOT blocked AND NOT held) AS a{i}")).collect();
        let columns: Vec<String> = (0..n).map(|i| format!("s.a{i}")).collect();
        let select = format!(
            "WITH batch AS ({}), {} SELECT s.examined, s.blocked, {}, s.held, {} FROM seen s",
            self.candidates(false),
            self.seen(&arrays),
            self.new_cursor(),
            columns.join(", ")
        );
        let params: Vec<String> = (0..n).map(|i| format!("${}", 8 + i)).collect();
        let names: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        let mut action = format!("WITH acted AS (SELECT * FROM unnest({}) AS k({}))", params.join(", "), names.join(", "));
        for child in self.child_deletes("acted") {
            action.push_str(&format!(", {child}"));
        }
        let key_names: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        let (from, target) = self.matching("t", "acted", &key_names, &key_names);
        let mut returned: Vec<String> = key_names.clone();
        returned.extend(self.audit.iter().flatten().filter(|c| !key_names.contains(c)).cloned());
        let returning: Vec<String> = returned.iter().map(|c| col("t", c)).collect();
        match &self.update {
            None => {
                let using = if from.is_empty() { String::new() } else { format!(" USING {from}") };
                action.push_str(&format!(", done AS (DELETE FROM {} t{using} WHERE {target} AND {}", self.relation, self.due()));
            }
            Some(update) => {
                let from = if from.is_empty() { String::new() } else { format!(" FROM {from}") };
                action.push_str(&format!(
                    ", done AS (UPDATE {} t SET {}{from} WHERE {target} AND {}",
                    self.relation,
                    update.sets(),
                    self.due()
                ));
            }
        }
        let data = if self.audit.is_some() {
            format!("array_agg({})", sql::jsonb_of_columns("d", self.audit.as_deref().unwrap_or_default()))
        } else {
            "NULL::jsonb[]".into()
        };
        let keys = if self.audit.is_some() { format!("array_agg({})", self.row_key("d")) } else { "NULL::text[]".into() };
        action.push_str(&format!(
            " RETURNING {}) SELECT count(*), $4::bigint, $5::bigint, $6::text, {keys}, {data}, NULL::jsonb[], $7::bigint FROM done d",
            returning.join(", ")
        ));
        (select, action)
    }

    /// The audit columns of row `t` as jsonb (NULL without audit).
    fn audit_data(&self) -> String {
        sql::jsonb_of_columns("t", self.audit.as_deref().unwrap_or_default())
    }

    /// What the batch does to a due row, as audit rows name it.
    pub fn action(&self) -> &'static str {
        self.update.as_ref().map_or("delete", |u| u.action)
    }

    /// `$1` cursor, `$2` limit, `$3` older_than; in physical order `$1` and `$4` are the rows
    /// (tids) the batch's range lies between.
    pub fn args<'a>(&'a self, limit: i32) -> Vec<DatumWithOid<'a>> {
        match &self.physical {
            Some(blocks) => {
                let (after, before) = blocks.range(limit);
                vec![after.into(), i64::from(limit).into(), self.older_than.into(), before.into()]
            }
            None => vec![self.cursor.clone().into(), i64::from(limit).into(), self.older_than.into()],
        }
    }

    /// Forgets the sweep in progress: what is planned next reads from the first due row.
    pub fn forget_sweep(&mut self) {
        self.cursor = None;
        self.physical = None;
    }

    /// Whether a sweep of this policy may go in physical order: a table of its own (a ctid is
    /// a row's only on one heap: not a partitioned table's, not a Citus table's), and no walk
    /// of groups (a walk's order is the groups').
    fn may_sweep_physically(&self) -> bool {
        !self.partitioned && !self.reference && self.walked_groups().is_none()
    }

    /// The planner's estimate of the rows due now, as the policy's owner (the filter may read
    /// other tables), from the statistics of the time column (and of the filter's columns).
    pub fn estimated_due_rows(&self) -> Option<f64> {
        let query = format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} t WHERE {}", self.relation, self.due());
        let args = vec![Option::<String>::None.into(), 0i64.into(), self.older_than.into()];
        let plan = role::run_as(self.owner, true, || {
            // Read-write SPI: in a batch's subtransaction a read-only one refuses EXPLAIN
            // ("not allowed in a non-volatile function").
            Spi::connect_mut(|client| client.update(query.as_str(), None, &args)?.first().get_one::<pgrx::Json>())
                .unwrap_or_else(|e| error::internal(e))
        })?;
        plan.0.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()
    }

    /// The order of a new sweep (order.rs): physical order from the start of the heap to its
    /// current end, or None for time order.
    fn sweep_order(&self) -> Option<Blocks> {
        if !self.may_sweep_physically() {
            return None;
        }
        let table = sql::optional_row(
            "SELECT pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::bigint, c.reltuples::float8,
                    CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples / c.relpages ELSE 0 END::float8,
                    pg_catalog.pg_stat_get_mod_since_analyze(c.oid)::float8
               FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[self.relid.into()],
            |row| {
                Ok(order::Table {
                    pages: row.get::<i64>(1)?.unwrap_or(0),
                    rows: row.get::<f64>(2)?.unwrap_or(-1.0),
                    rows_per_page: row.get::<f64>(3)?.unwrap_or(0.0),
                    changed_since_analyze: row.get::<f64>(4)?.unwrap_or(0.0),
                })
            },
        )?;
        order::physical_sweep(&table, || self.estimated_due_rows())
    }

    /// The size of the next batch: fixed, or the adaptive size reached so far.
    fn next_size(&self) -> i32 {
        match self.target_batch_time {
            None => self.batch_size,
            Some(_) => self.current_batch.unwrap_or(self.batch_size),
        }
    }
}

/// The adaptive batch size after a batch of `size` rows that took `elapsed` against `target`
/// (the pt-archiver `--chunk-time` idea): over the target it shrinks in proportion (at most
/// to a quarter at once), well under it grows (at most double at once) if the batch was full,
/// since a short batch says nothing about a bigger one. Growing, it aims at 80 % of the target:
/// batch times vary, and an app writer waits for a batch's row locks as long as it runs (at a
/// 50 ms target, aiming at the target itself, a writer once waited 116 ms).
pub fn adapt_batch_size(size: i32, elapsed: Duration, target: Duration, full: bool) -> i32 {
    const GROWTH_AIM: f64 = 0.8;
    let ratio = target.as_secs_f64() / elapsed.as_secs_f64().max(1e-6);
    let next = if ratio < 1.0 {
        f64::from(size) * ratio.max(0.25)
    } else if full && ratio * GROWTH_AIM > 1.2 {
        f64::from(size) * (ratio * GROWTH_AIM).min(2.0)
    } else {
        f64::from(size)
    };
    (next.round() as i32).clamp(BATCH_MIN, BATCH_MAX)
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

/// Runs one batch of policy `id` with at most `cap` rows (NULL: the policy's own size).
/// Skips (examined = 0) when another reaper holds the policy's lock. A policy on a Citus
/// distributed table runs one batch per shard on the workers instead (shards.rs).
pub fn run(id: i32, cap: Option<i32>) -> Outcome {
    let mut policy = Policy::load(id);
    let limit = policy.next_size().min(cap.unwrap_or(BATCH_MAX));
    if !try_lock(id) {
        return Outcome { acted: 0, examined: 0, sweep_done: true };
    }
    if let Some(distribution) = crate::citus::distribution(policy.relid) {
        shards::check(&policy, &distribution);
        if distribution.method == "h" {
            return shards::run(&policy, limit);
        }
        policy.reference = true;
    }
    if policy.cursor.is_none() {
        policy.physical = policy.sweep_order();
    } else if policy.physical.is_some() && !policy.may_sweep_physically() {
        // A table become a Citus reference table halfway through a physical sweep.
        policy.forget_sweep();
    }
    let action = policy.action();
    execute(&policy, limit, |client, done| {
        let next_size = policy.target_batch_time.map(|target| adapt_batch_size(limit, done.elapsed, target, !done.sweep_done));
        let args = [
            policy.id.into(),
            policy.name.as_str().into(),
            policy.relation.as_str().into(),
            action.into(),
            done.audit_keys(),
            done.audit_data(),
            done.sweep_done.into(),
            done.cursor.clone().into(),
            done.acted.into(),
            done.blocked.into(),
            next_size.into(),
            done.event_data(),
            policy.owner.into(),
            done.held.into(),
        ];
        role::run_as(policy.bookkeeper, false, || {
            sql::run_kept(client, true, BOOKKEEPING, &args, None)?;
            if policy.events.is_some() && done.acted > 0 {
                // Delivered when this transaction commits, never before the rows are gone.
                let channel = format!("{}{}", policy::EVENT_CHANNEL_PREFIX, policy.name);
                sql::run_kept(client, true, "SELECT pg_catalog.pg_notify($1, $2)", &[channel.into(), done.acted.to_string().into()], None)?;
            }
            Ok::<_, pgrx::spi::Error>(())
        })?;
        Ok(Outcome { acted: done.acted, examined: done.examined, sweep_done: done.sweep_done })
    })
}

/// The policy's advisory lock for this transaction, if no other reaper holds it.
fn try_lock(id: i32) -> bool {
    sql::optional_row("SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)", &[ADVISORY_LOCK_CLASS.into(), id.into()], |row| {
        row.get::<bool>(1)
    })
    .flatten()
    .unwrap_or(false)
}

/// What a batch statement did, as `record` gets it to write down.
pub struct Done {
    pub acted: i64,
    pub examined: i64,
    pub blocked: i64,
    pub held: i64,
    pub cursor: Option<String>,
    pub sweep_done: bool,
    pub elapsed: Duration,
    audit_keys: Option<pg_sys::Datum>,
    audit_data: Option<pg_sys::Datum>,
    event_data: Option<pg_sys::Datum>,
}

impl Done {
    /// The acted-on rows' keys (text[]), as a parameter of the bookkeeping statement.
    pub fn audit_keys<'a>(&self) -> DatumWithOid<'a> {
        raw_arg(self.audit_keys, pg_sys::TEXTARRAYOID)
    }
    /// Their audit data (jsonb[]; NULL without audit).
    pub fn audit_data<'a>(&self) -> DatumWithOid<'a> {
        raw_arg(self.audit_data, pg_sys::JSONBARRAYOID)
    }
    /// Their events' data (jsonb[]; NULL without events).
    pub fn event_data<'a>(&self) -> DatumWithOid<'a> {
        raw_arg(self.event_data, pg_sys::JSONBARRAYOID)
    }
}

/// Runs the batch statement of `policy` for at most `limit` rows as its owner, then `record`
/// in the same SPI connection: the audit arrays go from the statement to the bookkeeping as
/// the binary values they are (they live until the connection ends), not through text.
pub fn execute<R>(policy: &Policy, limit: i32, record: impl FnOnce(&mut SpiClient<'_>, &Done) -> Result<R, pgrx::spi::Error>) -> R {
    Spi::connect_mut(|client| {
        let started = Instant::now();
        // The first statement's result of a two-statement batch, kept until the end: the
        // second takes its arrays as the values they are.
        let mut _chosen = None;
        let row = with_batch_plan_shape(|| {
            role::run_as(policy.owner, true, || {
                if policy.physical.is_some() {
                    return physical_batch(client, policy, limit);
                }
                if !policy.reference {
                    return sql::run_kept(client, true, &policy.statement(true), &policy.args(limit), Some(1));
                }
                let (select, action) = policy.reference_statements();
                let chosen = sql::run_kept(client, true, &select, &policy.args(limit), Some(1))?.first();
                // $1, $2 are the first statement's (cursor, limit); $3 older_than; $4 examined,
                // $5 blocked, $6 cursor, $7 held, passed through; then the arrays.
                let mut args = vec![
                    Option::<String>::None.into(),
                    Option::<i64>::None.into(),
                    policy.older_than.into(),
                    chosen.get::<i64>(1)?.into(),
                    chosen.get::<i64>(2)?.into(),
                    chosen.get::<String>(3)?.into(),
                    chosen.get::<i64>(4)?.into(),
                ];
                for ordinal in 5..5 + policy.carried().len() {
                    args.push(raw_arg(chosen.get_datum_by_ordinal(ordinal)?, chosen.column_type_oid(ordinal)?.value()));
                }
                // Planned with its values: Citus plans no generic plan of a modification
                // with parameters in a CTE ("could not create distributed plan").
                let action = sql::with_settings(&[(c"plan_cache_mode", "force_custom_plan")], || {
                    sql::run_kept(client, true, &action, &args, Some(1))
                });
                _chosen = Some(chosen);
                action
            })
        })?
        .first();
        let examined = row.get::<i64>(2)?.unwrap_or(0);
        // A walk's batch is full when its rows and the groups it passed fill it.
        let short = if policy.walked_groups().is_some() { row.get::<i64>(9)?.unwrap_or(0) } else { examined } < i64::from(limit);
        let (cursor, sweep_done) = match &policy.physical {
            Some(blocks) => match blocks.after_batch(limit) {
                Some(next) => (Some(next.as_cursor()), false),
                None => (None, true),
            },
            None => (row.get::<String>(4)?, short),
        };
        let done = Done {
            elapsed: started.elapsed(),
            acted: row.get::<i64>(1)?.unwrap_or(0),
            examined,
            blocked: row.get::<i64>(3)?.unwrap_or(0),
            cursor,
            audit_keys: row.get_datum_by_ordinal(5)?,
            audit_data: row.get_datum_by_ordinal(6)?,
            event_data: row.get_datum_by_ordinal(7)?,
            held: row.get::<i64>(8)?.unwrap_or(0),
            sweep_done,
        };
        record(client, &done)
    })
    .unwrap_or_else(|e| error::internal(e))
}

/// A batch in physical order: the plain statement, waiting at most order::plain_lock_wait for
/// a row lock; if an app holds one, that statement is rolled back and the same range is done
/// by the locking statement, which passes locked rows over (they are retried next sweep).
fn physical_batch<'conn>(
    client: &mut SpiClient<'conn>,
    policy: &Policy,
    limit: i32,
) -> Result<pgrx::spi::SpiTupleTable<'conn>, pgrx::spi::Error> {
    let wait = order::plain_lock_wait();
    let plain = sql::in_subtransaction_catching(
        |code| code == Code::ERRCODE_LOCK_NOT_AVAILABLE,
        || {
            sql::with_settings(&[(c"lock_timeout", wait.as_str())], || {
                sql::run_kept(client, true, &policy.statement(false), &policy.args(limit), Some(1))
            })
        },
    );
    match plain {
        Ok(done) => done,
        Err(_) => sql::run_kept(client, true, &policy.statement(true), &policy.args(limit), Some(1)),
    }
}

/// What a batch records as the extension owner: one audit row per acted-on row (`$5` keys and
/// `$6` data, parallel arrays; NULL data: no audit), one event per acted-on row (`$12` data;
/// NULL: no events) and the policy's new state.
pub const BOOKKEEPING: &str = "
WITH audit AS (
    INSERT INTO lifecycle.audit_log (policy, relation, row_key, action, data)
    SELECT $2, $3, u.k, $4, u.d FROM unnest($5::text[], $6::jsonb[]) AS u(k, d) WHERE $6 IS NOT NULL),
events AS (
    INSERT INTO lifecycle.events (policy, owner, relation, row_key, action, data)
    SELECT $2, $13::oid::regrole, $3, u.k, $4, u.d FROM unnest($5::text[], $12::jsonb[]) AS u(k, d) WHERE $12 IS NOT NULL)
UPDATE lifecycle.policy_state
   SET cursor = CASE WHEN $7 THEN NULL ELSE $8::jsonb END,
       sweep_started_at = CASE WHEN cursor IS NULL THEN now() ELSE sweep_started_at END,
       last_run_at = now(), last_acted = $9, total_acted = total_acted + $9,
       total_blocked = total_blocked + $10, total_held = total_held + $14, batches = batches + 1, last_error = NULL,
       current_batch = $11
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

#[cfg(test)]
mod tests {
    use super::{adapt_batch_size, BATCH_MAX, BATCH_MIN};
    use std::time::Duration;

    #[test]
    fn adaptive_batches_grow_under_the_target_and_shrink_over_it() {
        let ms = Duration::from_millis;
        assert_eq!(adapt_batch_size(1000, ms(10), ms(50), true), 2000, "at most double at once");
        assert_eq!(adapt_batch_size(1000, ms(10), ms(50), false), 1000, "a short batch says nothing about a bigger one");
        assert_eq!(adapt_batch_size(1000, ms(25), ms(50), true), 1600, "growing aims below the target");
        assert_eq!(adapt_batch_size(1000, ms(40), ms(50), true), 1000, "near the target it stays");
        assert_eq!(adapt_batch_size(1000, ms(100), ms(50), true), 500, "over the target in proportion");
        assert_eq!(adapt_batch_size(1000, ms(1000), ms(50), true), 250, "at most a quarter at once");
        assert_eq!(adapt_batch_size(BATCH_MAX, ms(1), ms(50), true), BATCH_MAX);
        assert_eq!(adapt_batch_size(BATCH_MIN, ms(1000), ms(50), true), BATCH_MIN);
    }
}
