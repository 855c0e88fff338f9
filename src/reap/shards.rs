//! Citus: a policy on a hash-distributed table runs its batches on the workers, one per shard,
//! each against the shard itself, in the worker's own transaction (docs/scaling.md).
//!
//! A batch statement over the distributed table cannot run on the coordinator: its keyset
//! cursor spans shards and Citus refuses `FOR UPDATE` across them. So a round of such a policy
//! sends each worker one `CALL lifecycle._reap_shards(...)` (Citus's `master_run_on_worker`:
//! in parallel, each over a connection of its own, so in the worker's own transactions) with
//! the policy as the coordinator resolved it and the worker's shards whose sweep is not done,
//! each with its cursor. The worker runs one batch per shard and commits after each, audit rows
//! into its own `lifecycle.audit_log` in the batch's transaction; the coordinator then writes
//! down each shard's cursor (`lifecycle.shard_state`) and the policy's totals. No lock spans
//! shards or nodes, and a killed batch loses only itself.

use super::batch::{self, adapt_batch_size, Handling, Outcome, Policy, BOOKKEEPING};
use crate::citus::{colocated_shard, distribution, on_workers, shards_of, Distribution};
use crate::error::{self, Code};
use crate::role;
use crate::sql;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Refuses what a batch on Citus cannot do as it does on one server (registration checks it,
/// and every round again: tables can be distributed after a policy was added). A hash-
/// distributed table's children must be colocated with it on the referencing column; a
/// reference table's must be reference tables too; neither can archive or send events.
pub fn check(policy: &Policy, table: &Distribution) {
    let refuse = |message: String, hint: &str| -> ! { error::raise(Code::ERRCODE_FEATURE_NOT_SUPPORTED, message, None, Some(hint)) };
    if policy.archive.is_some() || policy.events.is_some() {
        refuse(
            format!("archive and events are not supported for {}, a Citus table", policy.relation),
            "A batch acts on every node, and the archive and event tables are on the coordinator: leave them out (audit rows are kept).",
        );
    }
    let column = table.column.as_deref().unwrap_or_default();
    for child in policy.children.iter().filter(|c| c.handling != Handling::Cascade) {
        let child_table = distribution(child.relid);
        let fits = match table.method.as_str() {
            // The child's rows of a parent row are in the colocated shard only if the child's
            // distribution column is the one that references the parent's.
            "h" => child_table.is_some_and(|d| {
                d.method == "h"
                    && d.colocation == table.colocation
                    && child.parent_columns.iter().position(|p| p == column).is_some_and(|i| Some(&child.columns[i]) == d.column.as_ref())
            }),
            _ => child_table.is_some_and(|d| d.method == "n"),
        };
        if !fits && table.method == "h" {
            refuse(
                format!("{} is not colocated with {} on the column that references {}", child.relation, policy.relation, sql::literal(column)),
                "Distribute the child on that column with colocate_with => the policy's table: a batch deletes or checks children in the shard beside the parent's.",
            );
        } else if !fits {
            refuse(
                format!("{} is a reference table, and its child {} is not", policy.relation, child.relation),
                "A batch on a reference table deletes or checks its children on every node: make them reference tables too.",
            );
        }
    }
}

/// A shard whose sweep is not done, where it is and where its cursor stands.
struct Shard {
    id: i64,
    node: String,
    port: i32,
    cursor: Option<String>,
}

/// The shards of the policy's table that have not finished the current sweep.
fn pending_shards(policy: &Policy) -> Vec<Shard> {
    let states: HashMap<i64, (bool, Option<String>)> = role::run_as(policy.bookkeeper, false, || {
        Spi::connect(|client| {
            client
                .select("SELECT shardid, swept, cursor::text FROM lifecycle.shard_state WHERE policy_id = $1", None, &[policy.id.into()])?
                .map(|row| Ok((row.get::<i64>(1)?.unwrap_or_default(), (row.get::<bool>(2)?.unwrap_or(false), row.get::<String>(3)?))))
                .collect::<Result<HashMap<_, _>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| error::internal(e));
    shards_of(policy.relid)
        .into_iter()
        .filter_map(|(node, port, id)| match states.get(&id) {
            Some((true, _)) => None,
            state => Some(Shard { id, node, port, cursor: state.and_then(|(_, cursor)| cursor.clone()) }),
        })
        .collect()
}

/// What one shard's batch did, or the error it failed with.
struct ShardOutcome {
    id: i64,
    acted: i64,
    examined: i64,
    blocked: i64,
    held: i64,
    cursor: Option<String>,
    swept: bool,
    elapsed: Duration,
    error: Option<String>,
}

impl ShardOutcome {
    fn failed(id: i64, error: String) -> ShardOutcome {
        ShardOutcome {
            id,
            acted: 0,
            examined: 0,
            blocked: 0,
            held: 0,
            cursor: None,
            swept: true,
            elapsed: Duration::ZERO,
            error: Some(error),
        }
    }

    /// From an element of `_reap_shards`'s outcome (what `reap_shard` returns, plus shardid).
    fn parse(v: &Value) -> ShardOutcome {
        let id = v["shardid"].as_i64().unwrap_or_default();
        if let Some(e) = v["error"].as_str() {
            return ShardOutcome::failed(id, e.to_string());
        }
        let n = |k: &str| v[k].as_i64().unwrap_or_default();
        ShardOutcome {
            id,
            acted: n("acted"),
            examined: n("examined"),
            blocked: n("blocked"),
            held: n("held"),
            cursor: v["cursor"].as_str().map(str::to_string),
            swept: v["sweep_done"].as_bool().unwrap_or(true),
            elapsed: Duration::from_micros(n("micros").max(0) as u64),
            error: None,
        }
    }
}

/// One round of `policy` on its shards: one batch of at most `limit` rows on every shard whose
/// sweep is not done, all workers at once. `sweep_done` when every shard has finished its sweep.
pub fn run(policy: &Policy, limit: i32) -> Outcome {
    let definition = sql::literal(&policy.definition().to_string());
    let shards = pending_shards(policy).into_iter().map(|s| {
        let cursor = s.cursor.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok());
        (s.node, s.port, json!({"shardid": s.id, "cursor": cursor}))
    });
    let outcomes = on_workers(shards, |list| format!("CALL lifecycle._reap_shards({definition}::jsonb, {list}::jsonb, {limit})"));
    record(policy, &outcomes.iter().map(ShardOutcome::parse).collect::<Vec<_>>(), limit)
}

/// Per-shard progress on the coordinator: cursors, sweep marks and totals.
const SHARD_BOOKKEEPING: &str = "
INSERT INTO lifecycle.shard_state AS s (policy_id, shardid, cursor, swept, total_acted, batches, errors, last_run_at, last_error, last_error_at)
SELECT $1, o.shardid, o.cursor::jsonb, o.swept, o.acted, 1, (o.error IS NOT NULL)::integer, now(), o.error,
       CASE WHEN o.error IS NOT NULL THEN now() END
  FROM unnest($2::bigint[], $3::text[], $4::boolean[], $5::bigint[], $6::text[]) AS o(shardid, cursor, swept, acted, error)
ON CONFLICT (policy_id, shardid) DO UPDATE
   SET cursor = CASE WHEN excluded.last_error IS NULL THEN excluded.cursor ELSE s.cursor END,
       swept = excluded.swept, total_acted = s.total_acted + excluded.total_acted, batches = s.batches + 1,
       errors = s.errors + excluded.errors, last_run_at = now(),
       last_error = excluded.last_error, last_error_at = CASE WHEN excluded.last_error IS NULL THEN s.last_error_at ELSE now() END";

/// The policy's totals after a round on its shards (`$5`: the first shard error, if any).
const POLICY_BOOKKEEPING: &str = "
UPDATE lifecycle.policy_state
   SET cursor = NULL, sweep_started_at = coalesce(sweep_started_at, now()),
       last_run_at = now(), last_acted = $2, total_acted = total_acted + $2,
       total_blocked = total_blocked + $3, total_held = total_held + $4, batches = batches + 1,
       last_error = $5, last_error_at = CASE WHEN $5 IS NULL THEN last_error_at ELSE now() END,
       errors = errors + ($5 IS NOT NULL)::integer, current_batch = $6
 WHERE policy_id = $1";

/// A sweep is over on every shard: the next round starts a new one (and forgets shards that
/// a split or a drop took away; the two touch different rows).
const NEW_SWEEP: &str = "
WITH gone AS (DELETE FROM lifecycle.shard_state st
               WHERE st.policy_id = $1 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_shard s WHERE s.shardid = st.shardid)),
     sweep AS (UPDATE lifecycle.policy_state SET sweep_started_at = NULL WHERE policy_id = $1)
UPDATE lifecycle.shard_state st SET swept = false, cursor = NULL
 WHERE st.policy_id = $1 AND EXISTS (SELECT 1 FROM pg_catalog.pg_dist_shard s WHERE s.shardid = st.shardid)";

/// Writes down a round's outcomes; the round's `Outcome` for lifecycle._reap_round.
fn record(policy: &Policy, outcomes: &[ShardOutcome], limit: i32) -> Outcome {
    let sum = |f: fn(&ShardOutcome) -> i64| outcomes.iter().map(f).sum::<i64>();
    let (acted, examined) = (sum(|o| o.acted), sum(|o| o.examined));
    let first_error = outcomes.iter().find_map(|o| o.error.as_ref().map(|e| format!("shard {}: {e}", o.id)));
    for o in outcomes {
        if let Some(e) = &o.error {
            error::warn(
                format!("pg_lifecycle: policy {} failed on shard {}: {e}", policy.name, o.id),
                "See lifecycle.shard_status; the shard's batch was rolled back on its worker and is retried next sweep.",
            );
        }
    }
    // Adaptive sizes follow the slowest shard: every shard's batch has the same size.
    let slowest = outcomes.iter().map(|o| o.elapsed).max().unwrap_or_default();
    // The round covered every shard whose sweep was not done: if each has finished it now,
    // the sweep is over (a shard added meanwhile waits for the next one).
    let sweep_done = outcomes.iter().all(|o| o.swept);
    let next_size =
        policy.target_batch_time.filter(|_| !slowest.is_zero()).map(|target| adapt_batch_size(limit, slowest, target, !sweep_done));
    role::run_as(policy.bookkeeper, false, || {
        Spi::run_with_args(
            SHARD_BOOKKEEPING,
            &[
                policy.id.into(),
                outcomes.iter().map(|o| o.id).collect::<Vec<_>>().into(),
                outcomes.iter().map(|o| o.cursor.clone()).collect::<Vec<_>>().into(),
                outcomes.iter().map(|o| o.swept).collect::<Vec<_>>().into(),
                outcomes.iter().map(|o| o.acted).collect::<Vec<_>>().into(),
                outcomes.iter().map(|o| o.error.clone()).collect::<Vec<_>>().into(),
            ],
        )?;
        Spi::run_with_args(
            POLICY_BOOKKEEPING,
            &[
                policy.id.into(),
                acted.into(),
                sum(|o| o.blocked).into(),
                sum(|o| o.held).into(),
                first_error.clone().into(),
                next_size.or(policy.current_batch).into(),
            ],
        )?;
        if sweep_done {
            Spi::run_with_args(NEW_SWEEP, &[policy.id.into()])?;
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| error::internal(e));
    Outcome { acted, examined, sweep_done }
}

/// One batch of a distributed table's policy on one shard of this worker (sent by the
/// coordinator's round through lifecycle._reap_shards, sql/shards.sql): the batch statement of
/// one server, on the shard and its colocated children's shards, as the policy's owner (the
/// caller must be able to act for it here too), audit rows into this node's audit log.
#[pg_extern(schema = "lifecycle", name = "_reap_shard")]
#[search_path(pg_catalog, pg_temp)]
pub fn reap_shard(definition: JsonB, shardid: i64, cursor: Option<JsonB>, batch: i32) -> JsonB {
    crate::limits::require_batch(Some(batch), "batch");
    let mut policy = Policy::from_definition(&definition.0, |relation| colocated_shard(relation, shardid));
    batch::check_may_act(policy.owner, &policy.name);
    policy.cursor = cursor.filter(|c| !c.0.is_null()).map(|c| c.0.to_string());
    let action = policy.action();
    // Audit rows name the distributed table, as on one server.
    let relation = definition.0["relation"].as_str().unwrap_or_default().to_string();
    // Citus refuses writes to a shard by its name unless told they are intended.
    let done = sql::with_settings(&[(c"citus.enable_manual_changes_to_shards", "on")], || {
        batch::execute(&policy, batch, |client, done| {
            // No policy_state row here (the coordinator keeps it): NULL matches none.
            let args = [
                Option::<i32>::None.into(),
                policy.name.as_str().into(),
                relation.as_str().into(),
                action.into(),
                done.audit_keys(),
                done.audit_data(),
                done.sweep_done.into(),
                Option::<String>::None.into(),
                done.acted.into(),
                done.blocked.into(),
                Option::<i32>::None.into(),
                pgrx::datum::DatumWithOid::null_oid(pg_sys::JSONBARRAYOID),
                policy.owner.into(),
                done.held.into(),
            ];
            role::run_as(policy.bookkeeper, false, || sql::run_kept(client, true, BOOKKEEPING, &args, None))?;
            Ok(json!({
                "acted": done.acted, "examined": done.examined, "blocked": done.blocked, "held": done.held,
                "cursor": done.cursor, "sweep_done": done.sweep_done, "micros": done.elapsed.as_micros() as i64,
            }))
        })
    });
    JsonB(done)
}
