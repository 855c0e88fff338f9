//! Citus, where it is installed: how a table is distributed, which shard of a table sits beside
//! another's, and running a command on the workers that hold some shards. Reaping
//! (src/reap/shards.rs) and link backfills (src/links.rs) run their batches shard by shard on
//! the workers with these; docs/scaling.md says why.

use crate::error::{self, Code};
use crate::sql;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How Citus distributes a table: `h` (hash), `n` (reference or Citus-local), ...
pub struct Distribution {
    pub method: String,
    pub colocation: i32,
    pub column: Option<String>,
}

/// Whether Citus is installed in this database.
fn installed() -> bool {
    // SAFETY: a catalog lookup by name; missing_ok returns InvalidOid instead of raising.
    unsafe { pg_sys::get_extension_oid(c"citus".as_ptr(), true) != pg_sys::InvalidOid }
}

/// How Citus distributes table `relid`; None for a table Citus does not manage (or no Citus).
pub fn distribution(relid: pg_sys::Oid) -> Option<Distribution> {
    if !installed() {
        return None;
    }
    sql::optional_row(
        "SELECT partmethod::text, colocationid, pg_catalog.column_to_column_name(logicalrelid, partkey)
           FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1",
        &[relid.into()],
        |row| {
            Ok(Distribution { method: row.get(1)?.unwrap_or_default(), colocation: row.get(2)?.unwrap_or_default(), column: row.get(3)? })
        },
    )
}

/// Runs `command(shards)` (an SQL literal of the JSON array of a node's shard entries) on each
/// node holding some of `shards` (node, port, entry with "shardid"), all nodes at once through
/// Citus's master_run_on_worker: each over a connection of its own, so in the node's own
/// transactions, as the current user (whose rights each node checks). Returns one JSON object
/// per shard: what the command said of it, or `{"shardid", "error"}` for the shards of a node
/// whose call failed as a whole (the node is down, the session was killed: what it committed
/// before stands, and the caller does not learn it).
pub fn on_workers(shards: impl Iterator<Item = (String, i32, Value)>, command: impl Fn(&str) -> String) -> Vec<Value> {
    let mut by_node: BTreeMap<(String, i32), Vec<Value>> = BTreeMap::new();
    for (node, port, entry) in shards {
        by_node.entry((node, port)).or_default().push(entry);
    }
    let (mut nodes, mut ports, mut commands) = (Vec::new(), Vec::new(), Vec::new());
    for ((node, port), list) in &by_node {
        nodes.push(node.clone());
        ports.push(*port);
        commands.push(command(&sql::literal(&Value::from(list.clone()).to_string())));
    }
    let replies = Spi::connect(|client| {
        client
            .select(
                "SELECT success, result FROM pg_catalog.master_run_on_worker($1, $2, $3, true)",
                None,
                &[nodes.into(), ports.into(), commands.into()],
            )?
            .map(|row| Ok((row.get::<bool>(1)?.unwrap_or(false), row.get::<String>(2)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e));
    let mut outcomes = Vec::new();
    for (((node, port), list), (success, result)) in by_node.iter().zip(replies) {
        let parsed = if success { serde_json::from_str::<Value>(&result).ok() } else { None };
        match parsed {
            Some(Value::Array(each)) => outcomes.extend(each),
            _ => outcomes.extend(list.iter().map(|s| json!({"shardid": s["shardid"], "error": format!("on {node}:{port}: {result}")}))),
        }
    }
    outcomes
}

/// The name of the shard of `relation` that is colocated with shard `shardid` (the shard itself
/// when it is `relation`'s), as this worker's Citus metadata says; 42P01 when there is none.
pub fn colocated_shard(relation: &str, shardid: i64) -> String {
    sql::optional_row(
        // shard_name leaves out the schema when it is public, which this search_path lacks.
        "SELECT CASE WHEN n.nspname = 'public' THEN 'public.' ELSE '' END || pg_catalog.shard_name(c.logicalrelid, c.shardid)
           FROM pg_catalog.pg_dist_shard p
           JOIN pg_catalog.pg_dist_partition pp ON pp.logicalrelid = p.logicalrelid
           JOIN pg_catalog.pg_dist_partition cp ON cp.colocationid = pp.colocationid AND cp.logicalrelid = $2::regclass
           JOIN pg_catalog.pg_dist_shard c ON c.logicalrelid = cp.logicalrelid AND c.shardminvalue = p.shardminvalue
           JOIN pg_catalog.pg_class cc ON cc.oid = c.logicalrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = cc.relnamespace
          WHERE p.shardid = $1",
        &[shardid.into(), relation.into()],
        |row| row.get::<String>(1),
    )
    .flatten()
    .unwrap_or_else(|| {
        error::raise(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("no shard of {relation} is colocated with shard {shardid}"),
            None,
            Some("The shard was split or dropped since the coordinator listed it; the next round lists the shards again."),
        )
    })
}

/// `colocated_shard` for SQL run on a worker (link backfills, sql/shards.sql).
#[pg_extern(schema = "lifecycle", name = "_colocated_shard", stable)]
#[search_path(pg_catalog, pg_temp)]
fn colocated_shard_sql(relation: &str, shardid: i64) -> String {
    colocated_shard(relation, shardid)
}

/// Whether Citus distributes table `relation` (for SQL that takes another path then).
#[pg_extern(schema = "lifecycle", name = "_distributed", stable)]
#[search_path(pg_catalog, pg_temp)]
fn distributed_sql(relation: pg_sys::Oid) -> bool {
    distribution(relation).is_some()
}

/// The shards of `relation` with the node holding each: (node, port, shard id).
pub fn shards_of(relation: pg_sys::Oid) -> Vec<(String, i32, i64)> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT n.nodename::text, n.nodeport, s.shardid
                   FROM pg_catalog.pg_dist_shard s
                   JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid
                   JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary' AND n.isactive
                  WHERE s.logicalrelid = $1
                  ORDER BY s.shardid",
                None,
                &[relation.into()],
            )?
            .map(|row| Ok((row.get(1)?.unwrap_or_default(), row.get(2)?.unwrap_or_default(), row.get(3)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e))
}

/// The distribution column of `relation` as Citus has it (the link trigger on a shard, where
/// it matches rows of the same user; sql/links.sql); NULL for a table Citus does not hash.
#[pg_extern(schema = "lifecycle", name = "_distribution_column", stable)]
#[search_path(pg_catalog, pg_temp)]
fn distribution_column_sql(relation: pg_sys::Oid) -> Option<String> {
    distribution(relation).and_then(|d| d.column)
}
