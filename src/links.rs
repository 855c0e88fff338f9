//! Links and safe migrations: trigger-maintained link columns, a batched resumable backfill,
//! and the two-step FK action change. Mostly SQL (sql/links.sql): the work is DDL, triggers and
//! set-based UPDATEs, which read best where a DBA reads them. What is here is the coordinator's
//! side of a backfill on Citus: one round of batches, one per shard, on the workers.

use crate::citus::{distribution, on_workers, shards_of};
use crate::error::{self, Code};
use crate::limits::require_batch;
use crate::sql;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Map, Value};

/// One round of the backfill of link `link_name` on Citus: a batch of at most `batch` target rows
/// on every shard of the (distributed) target whose backfill is not done, all workers at once
/// (lifecycle._backfill_shards, sql/shards.sql, one transaction per shard). Reads the per-shard
/// positions from `links.backfill_cursor` (a JSON object: shard id -> last key, or true when
/// done) and returns `{filled, done, cursor, error}` for backfill_link to save and commit.
#[pg_extern(schema = "lifecycle", name = "_backfill_round")]
#[search_path(pg_catalog, pg_temp)]
fn backfill_round(link_name: &str, batch: i32) -> JsonB {
    require_batch(Some(batch), "batch");
    let (mut link, target, source, saved) = sql::optional_row(
        "SELECT to_jsonb(l), l.target::oid, l.source::oid, l.backfill_cursor FROM lifecycle.links l WHERE l.name = $1",
        &[link_name.into()],
        |row| {
            Ok((
                row.get::<JsonB>(1)?.map(|j| j.0).unwrap_or_default(),
                row.get::<pg_sys::Oid>(2)?.unwrap_or_default(),
                row.get::<pg_sys::Oid>(3)?.unwrap_or_default(),
                row.get::<String>(4)?,
            ))
        },
    )
    .unwrap_or_else(|| {
        error::raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("link {} does not exist", sql::literal(link_name)), None, None)
    });
    // A link matches within one user on Citus: the source row must sit in the target row's
    // colocated shard, which it does when both are distributed on the same value.
    let (Some(t), Some(s)) = (distribution(target), distribution(source)) else { not_colocated(&link) };
    if t.method != "h" || s.method != "h" || t.colocation != s.colocation {
        not_colocated(&link);
    }
    link["target_dist"] = json!(t.column);
    link["source_dist"] = json!(s.column);
    // A cursor saved by a backfill before the table was distributed is no per-shard position.
    let mut positions: Map<String, Value> =
        saved.and_then(|c| serde_json::from_str::<Value>(&c).ok()).and_then(|v| v.as_object().cloned()).unwrap_or_default();
    let shards = shards_of(target);
    let pending = shards.iter().filter(|(_, _, id)| positions.get(&id.to_string()) != Some(&Value::Bool(true))).map(|(node, port, id)| {
        let cursor = positions.get(&id.to_string()).cloned().unwrap_or(Value::Null);
        (node.clone(), *port, json!({"shardid": id, "cursor": cursor}))
    });
    let definition = sql::literal(&link.to_string());
    let outcomes = on_workers(pending, |list| format!("CALL lifecycle._backfill_shards({definition}::jsonb, {list}::jsonb, {batch})"));
    let (mut filled, mut first_error) = (0, None);
    for o in &outcomes {
        let id = o["shardid"].as_i64().unwrap_or_default().to_string();
        if let Some(e) = o["error"].as_str() {
            first_error.get_or_insert_with(|| format!("shard {id}: {e}"));
            continue;
        }
        filled += o["filled"].as_i64().unwrap_or_default();
        let finished = o["examined"].as_i64().unwrap_or_default() < i64::from(batch);
        positions.insert(id, if finished { Value::Bool(true) } else { o["cursor"].clone() });
    }
    let done = first_error.is_none() && shards.iter().all(|(_, _, id)| positions.get(&id.to_string()) == Some(&Value::Bool(true)));
    JsonB(json!({"filled": filled, "done": done, "cursor": Value::Object(positions).to_string(), "error": first_error}))
}

fn not_colocated(link: &Value) -> ! {
    error::raise(
        Code::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("link {}: {} and {} are not distributed together", link["name"], link["target"], link["source"]),
        None,
        Some("On Citus a link is backfilled shard by shard: distribute both tables on their user column, colocated (colocate_with)."),
    )
}

pgrx::extension_sql_file!("../sql/links.sql", name = "links", requires = ["reap", backfill_round]);
