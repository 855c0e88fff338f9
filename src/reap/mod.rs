//! Reaping: declarative retention policies (`add_policy`) and bounded batches (`reap_expired`,
//! `CALL reap`). The loops and views are SQL (sql/reap.sql); this module holds what needs
//! Rust: validation (policy.rs), the batch itself (batch.rs) and the role switches around it.

mod archive;
mod backpressure;
mod batch;
mod children;
mod computed;
mod filter;
mod groups;
mod holds;
mod keep;
mod kinds;
mod lifespan;
mod model;
mod order;
mod policy;
mod shards;

use crate::error::{self, Code};
use crate::role;
use batch::Policy;
use pgrx::prelude::*;
use ulid::Ulid;

/// Defines the reaper's settings (backpressure.rs) and keeps policies' children current
/// (children.rs).
pub fn init() {
    backpressure::init();
    children::init();
    order::init();
}

/// One batch of one policy. Since 0.3.0 the round runs batches itself (`reap_round`); this
/// stays because the 0.1.0 and 0.2.0 install scripts bind to its symbol (an install or an
/// upgrade from them needs it), and it is the owner-checked way to run one batch by hand.
#[pg_extern(schema = "lifecycle", name = "_reap_batch")]
#[search_path(pg_catalog, pg_temp)]
fn reap_batch(
    policy_id: i32,
    batch: Option<i32>,
) -> TableIterator<'static, (name!(acted, i64), name!(examined, i64), name!(sweep_done, bool))> {
    let outcome = batch::run(policy_id, batch);
    TableIterator::once((outcome.acted, outcome.examined, outcome.sweep_done))
}

/// One bounded batch for every enabled policy the caller may act for (its own, or those of
/// roles it is a member of) and not in `skip` (done for this reap call), or for `only_policy`.
/// Each policy runs in its own subtransaction: a failing policy is rolled back alone, its error
/// recorded in policy_state and raised as a WARNING. `batch` caps every policy's batch; NULL:
/// each policy's own (fixed or adaptive) size. The callers (lifecycle.reap_expired, CALL
/// lifecycle.reap) have checked that this server is the primary and have run
/// lifecycle._maintain_history (the partitions audit and event rows go to) at most a minute
/// before: per round, the two cost ~0.8 ms, a sixth of a 1000-row batch. For the same reason
/// the round is Rust, not plpgsql.
#[pg_extern(schema = "lifecycle", name = "_reap_round")]
#[search_path(pg_catalog, pg_temp)]
fn reap_round(
    batch: Option<i32>,
    skip: default!(Option<Vec<i32>>, "'{}'"),
    only_policy: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(policy_id, i32), name!(acted, i64), name!(examined, i64), name!(sweep_done, bool))> {
    if batch.is_some() {
        crate::limits::require_batch(batch, "batch");
    }
    let policies = Spi::connect_mut(|client| {
        crate::sql::run_kept(
            client,
            false,
            "SELECT id, name FROM lifecycle.policies
              WHERE enabled AND id <> ALL (coalesce($1, '{}')) AND ($2::text IS NULL OR name = $2)
                AND pg_catalog.pg_has_role(current_user, owner, 'USAGE')
              ORDER BY id",
            &[skip.into(), only_policy.into()],
            None,
        )?
        .map(|row| Ok((row.get::<i32>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default())))
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e));
    let lock_timeout = backpressure::batch_lock_timeout();
    let settings: Vec<(&std::ffi::CStr, &str)> = lock_timeout.iter().map(|t| (c"lock_timeout", t.as_str())).collect();
    let outcomes: Vec<_> = policies
        .into_iter()
        .map(|(id, name)| match crate::sql::in_subtransaction(|| crate::sql::with_settings(&settings, || batch::run(id, batch))) {
            Ok(outcome) => (id, outcome.acted, outcome.examined, outcome.sweep_done),
            Err((sqlstate, message)) => {
                note_policy_error(id, &sqlstate, &message);
                error::warn(
                    format!("pg_lifecycle: policy {name} failed: {message} (SQLSTATE {sqlstate})"),
                    "See lifecycle.policy_status; the batch was rolled back and is retried next run.",
                );
                (id, 0, 0, true)
            }
        })
        .collect();
    TableIterator::new(outcomes)
}

/// Records a failed batch in policy_state (the batch itself was rolled back).
#[pg_extern(schema = "lifecycle", name = "_note_policy_error")]
#[search_path(pg_catalog, pg_temp)]
fn note_policy_error(policy_id: i32, sqlstate: &str, message: &str) {
    let (name, owner) =
        crate::sql::optional_row("SELECT name, owner::oid FROM lifecycle.policies WHERE id = $1", &[policy_id.into()], |row| {
            Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<pg_sys::Oid>(2)?.unwrap_or_default()))
        })
        .unwrap_or_else(|| error::raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("policy with id {policy_id} does not exist"), None, None));
    batch::check_may_act(owner, &name);
    role::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE lifecycle.policy_state
                SET last_error = $2 || ': ' || $3, last_error_at = now(), last_run_at = now(), errors = errors + 1
              WHERE policy_id = $1",
            &[policy_id.into(), sqlstate.into(), message.into()],
        )
        .unwrap_or_else(|e| error::internal(e))
    });
}

/// Some(()) when the caller may act for the owner of policy `policy_id` (which exists): the
/// status helpers answer NULL otherwise rather than fail a view's whole query.
fn caller_may_act_for_owner(policy_id: i32) -> Option<()> {
    let owner = Spi::get_one_with_args::<pg_sys::Oid>("SELECT owner::oid FROM lifecycle.policies WHERE id = $1", &[policy_id.into()])
        .unwrap_or_else(|e| error::internal(e))?;
    role::has_privs_of(role::current(), owner).then_some(())
}

/// The planner's estimate of due rows, computed as the policy's owner. NULL when the caller
/// may not act for the owner; raises when the policy no longer fits its table (a vanished
/// column, say), which lifecycle._estimate_backlog_or_null (policy_status) turns into NULL.
#[pg_extern(schema = "lifecycle", name = "_estimate_backlog")]
#[search_path(pg_catalog, pg_temp)]
fn estimate_backlog(policy_id: i32) -> Option<i64> {
    caller_may_act_for_owner(policy_id)?;
    Policy::load(policy_id).estimated_due_rows().map(|rows| rows as i64)
}

/// Whether a batch of the policy reads its table by a range of an index, as the planner plans
/// the batch: its time index, whatever its shape (led by columns the filter fixes, as Hydra's
/// (nid, requested_at); partial, with a predicate the rule implies), or the key of a ULID
/// policy. NULL when the caller may not act for the owner or the policy no longer fits its
/// table (lifecycle.check reports those otherwise).
#[pg_extern(schema = "lifecycle", name = "_batch_reads_an_index")]
#[search_path(pg_catalog, pg_temp)]
fn batch_reads_an_index(policy_id: i32) -> Option<bool> {
    caller_may_act_for_owner(policy_id)?;
    let planned = crate::sql::in_subtransaction(|| {
        let mut policy = Policy::load(policy_id);
        policy.forget_sweep();
        let query = format!("EXPLAIN (FORMAT JSON) {}", policy.candidates(true));
        batch::with_batch_plan_shape(|| {
            role::run_as(policy.owner, true, || {
                // Read-write SPI: inside the subtransaction a read-only one refuses EXPLAIN
                // ("not allowed in a non-volatile function").
                Spi::connect_mut(|client| client.update(query.as_str(), None, &policy.args(1000))?.first().get_one::<pgrx::Json>())
                    .unwrap_or_else(|e| error::internal(e))
            })
        })
        .map(|plan| (plan, policy.relid, policy.time_as_indexed()))
    });
    let (plan, relid, time) = planned.ok()??;
    Some(reads_a_time_range(&plan.0, relid, &time))
}

/// Whether a plan reads the candidate rows (alias `t`, or `t_1`... for partitions) by an index
/// range on the time column: an index scan whose columns before the time column are all fixed
/// by equality in its Index Cond (none, for an index that starts with it). Any other scan of
/// them, sequential or of a whole index (a condition on a later column still reads it all),
/// reads the whole table.
fn reads_a_time_range(plan: &serde_json::Value, relid: pg_sys::Oid, time: &str) -> bool {
    match plan {
        serde_json::Value::Object(node) => {
            let text = |key: &str| node.get(key).and_then(|v| v.as_str()).unwrap_or_default();
            let alias = text("Alias");
            let candidate = alias == "t" || alias.strip_prefix("t_").is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
            let ranged = candidate && text("Node Type").starts_with("Index") && {
                let condition = text("Index Cond");
                let columns = index_columns(relid, text("Index Name"));
                let is_time = |c: &String| computed::without_outer_parens(c) == computed::without_outer_parens(time);
                let before_time = columns.iter().take_while(|c| !is_time(c));
                columns.iter().any(is_time) && before_time.clone().all(|c| fixed_by_equality(condition, c))
            };
            ranged || node.values().any(|v| reads_a_time_range(v, relid, time))
        }
        serde_json::Value::Array(items) => items.iter().any(|v| reads_a_time_range(v, relid, time)),
        _ => false,
    }
}

/// Whether an Index Cond fixes column `c` by equality: `(c = ...)`, or `((c)::text = ...)`
/// where the column is compared through a cast (a varchar column, as Keycloak's realm_id).
fn fixed_by_equality(condition: &str, c: &str) -> bool {
    if condition.contains(&format!("({c} = ")) {
        return true;
    }
    let cast = format!("(({c})::");
    condition.match_indices(&cast).any(|(at, _)| {
        let rest = &condition[at + cast.len()..];
        rest.split_once(' ').is_some_and(|(type_name, after)| !type_name.contains(')') && after.starts_with("= "))
    })
}

/// The key columns of the index called `name` on table `relid` or one of its partitions, as
/// its definition prints them: a column quoted as a plan prints it, an expression deparsed.
fn index_columns(relid: pg_sys::Oid, name: &str) -> Vec<String> {
    Spi::get_one_with_args::<Vec<String>>(
        "SELECT array_agg(pg_catalog.pg_get_indexdef(i.indexrelid, k.ord, false) ORDER BY k.ord)
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
           CROSS JOIN LATERAL generate_series(1, i.indnkeyatts::integer) AS k(ord)
          WHERE ic.relname = $2
            AND i.indrelid IN (SELECT $1 UNION ALL SELECT relid FROM pg_catalog.pg_partition_tree($1))",
        &[relid.into(), name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// What the next batch would touch, without touching it: key, time, whether children block
/// it, and the audit columns.
#[pg_extern(schema = "lifecycle")]
#[search_path(pg_catalog, pg_temp)]
fn preview(
    policy_name: &str,
    max_rows: default!(i32, 10),
) -> TableIterator<'static, (name!(row_key, String), name!(time_value, String), name!(blocked, bool), name!(audit_data, Option<pgrx::JsonB>))>
{
    crate::limits::require_batch(Some(max_rows), "max_rows");
    let (id, _) = policy_for_change(policy_name);
    let policy = Policy::load(id);
    // `blocked`: the row would be kept, by a child that references it or by a legal hold.
    // A walk's marker rows (groups with nothing due, tid NULL) are not rows.
    // At most max_rows: a physical sweep's next range is its whole block range.
    let query = format!("SELECT rk, tm::text, blocked OR held, data FROM ({}) c WHERE c.tid IS NOT NULL LIMIT $2", policy.candidates(true));
    let rows = batch::with_batch_plan_shape(|| {
        role::run_as(policy.owner, true, || {
            Spi::connect(|client| {
                client
                    .select(query.as_str(), None, &policy.args(max_rows))?
                    .map(|r| {
                        Ok((
                            r.get::<String>(1)?.unwrap_or_default(),
                            r.get::<String>(2)?.unwrap_or_default(),
                            r.get::<bool>(3)?.unwrap_or(false),
                            r.get::<pgrx::JsonB>(4)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::Error>>()
            })
            .unwrap_or_else(|e| error::internal(e))
        })
    });
    TableIterator::new(rows)
}

/// A policy's id and owner by name, after checking the caller may act for the owner. Works
/// when the policy's table is gone (unlike `Policy::load`), so broken policies can be dropped.
fn policy_for_change(name: &str) -> (i32, pg_sys::Oid) {
    let found = crate::sql::optional_row("SELECT id, owner::oid FROM lifecycle.policies WHERE name = $1", &[name.into()], |row| {
        Ok((row.get::<i32>(1)?.unwrap_or_default(), row.get::<pg_sys::Oid>(2)?.unwrap_or_default()))
    });
    let Some((id, owner)) = found else {
        error::raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("policy {} does not exist", crate::sql::literal(name)),
            None,
            Some("SELECT name FROM lifecycle.policies lists them."),
        )
    };
    batch::check_may_act(owner, name);
    (id, owner)
}

/// Removes a policy (its state goes with it; audit rows stay).
#[pg_extern(schema = "lifecycle")]
#[search_path(pg_catalog, pg_temp)]
fn drop_policy(policy_name: &str) -> bool {
    let (id, _) = policy_for_change(policy_name);
    role::as_extension_owner(|| Spi::run_with_args("DELETE FROM lifecycle.policies WHERE id = $1", &[id.into()]))
        .unwrap_or_else(|e| error::internal(e));
    true
}

/// Turns a policy on or off without losing its state.
#[pg_extern(schema = "lifecycle")]
#[search_path(pg_catalog, pg_temp)]
fn set_policy_enabled(policy_name: &str, enabled: bool) -> bool {
    let (id, _) = policy_for_change(policy_name);
    role::as_extension_owner(|| {
        Spi::run_with_args("UPDATE lifecycle.policies SET enabled = $2 WHERE id = $1", &[id.into(), enabled.into()])
    })
    .unwrap_or_else(|e| error::internal(e));
    enabled
}

/// The 48-bit ULID time (unix ms) of `at`, clamped to what a ULID can hold.
fn ulid_ms(at: TimestampWithTimeZone) -> u64 {
    const MAX: i64 = (1 << 48) - 1;
    match crate::time::unix_micros(at) {
        Some(micros) => micros.div_euclid(1000).clamp(0, MAX) as u64,
        None if at.is_infinity() => MAX as u64,
        None => 0,
    }
}

/// The smallest ULID (as uuid) of time `at`: every ULID created before `at` sorts below it,
/// so `id < ulid_floor(t)` is an index range scan on a ULID primary key.
#[pg_extern(schema = "lifecycle", immutable, parallel_safe)]
fn ulid_floor(at: TimestampWithTimeZone) -> pgrx::Uuid {
    pgrx::Uuid::from_bytes(Ulid::from_parts(ulid_ms(at), 0).to_bytes())
}

/// `ulid_floor` for ULIDs stored as canonical (upper-case Crockford base32) text.
#[pg_extern(schema = "lifecycle", immutable, parallel_safe)]
fn ulid_floor_text(at: TimestampWithTimeZone) -> String {
    Ulid::from_parts(ulid_ms(at), 0).to_string()
}

pgrx::extension_sql_file!(
    "../../sql/reap.sql",
    name = "reap",
    requires = [
        reap_batch,
        reap_round,
        note_policy_error,
        estimate_backlog,
        batch_reads_an_index,
        policy::register_policy,
        backpressure::reap_backpressure,
        ulid_floor,
        ulid_floor_text,
        // Before the comments and grants that name it (sql/comments.sql comes after "shards").
        computed::add_seconds,
        "expiry",
        "history",
        "core"
    ]
);
pgrx::extension_sql_file!("../../sql/shards.sql", name = "shards", requires = ["reap", "links", shards::reap_shard]);
pgrx::extension_sql_file!("../../sql/history.sql", name = "history", requires = ["expiry"]);
pgrx::extension_sql_file!("../../sql/compliance.sql", name = "compliance", requires = ["reap", holds::add_hold, holds::release_hold]);

#[cfg(test)]
mod tests {
    use super::fixed_by_equality;

    #[test]
    fn equality_is_seen_through_a_cast() {
        assert!(fixed_by_equality("((nid = $1) AND (requested_at < now()))", "nid"));
        assert!(fixed_by_equality("(((realm_id)::text = (grp.g0)::text) AND (t < 5))", "realm_id"));
        assert!(!fixed_by_equality("(((realm_id)::text > (grp.g0)::text))", "realm_id"));
        assert!(!fixed_by_equality("((realm_id > 'a'))", "realm_id"));
    }
}
