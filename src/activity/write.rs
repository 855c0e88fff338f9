//! The write half of `record_activity`: the rows a call must move, written as the owner of the
//! activity tables inside one subtransaction.
//!
//! A new (user, client) is inserted with ON CONFLICT DO NOTHING first: one statement creates
//! it, and for a row that exists DO NOTHING takes no row lock and writes nothing. An existing
//! row is read (no row lock, no WAL while it is still inside the throttle) and upserted only
//! when due, with the throttle repeated in the ON CONFLICT predicate so a concurrent writer can
//! never move a row backwards. Scope rows are read the same way, except under a parent this
//! call created (there are none yet), and all due ones are upserted by one statement. New rows
//! are created only when the storm guard allows; scope rows only under an existing or new
//! parent (FK). Operational errors (a lock timeout, a deadlock, a full disk) roll the
//! subtransaction back and are returned, never raised: activity is a side signal and must not
//! fail a token grant. Nor may it hold one up: the statements wait for a row lock at most
//! lifecycle.activity_lock_timeout (a lock_timeout set for the subtransaction alone).
//!
//! Why not SQL: the same statements behind a plpgsql SECURITY DEFINER function cost a fifth
//! more per new row (interpreter, SET clauses, a function scan), and plpgsql cannot send a
//! multi-row VALUES of varying length as one kept plan.
//!
//! These statements run with the table owner's rights under the caller's search_path, so
//! every operator is schema-qualified (`OPERATOR(pg_catalog.=)`) and every table too; the
//! parameters carry their types, so nothing else is looked up by name (tests/security.rs
//! shadows these operators). Every statement touches one activity table (the scope upsert also
//! joins the small `scope_services`, a reference table there) and filters on `user_id`, so on
//! Citus each is a single-shard (router) query (docs/scaling.md); the ON CONFLICT predicates
//! use only immutable operators (`timestamptz - timestamptz > interval`), which Citus requires.

use crate::error;
use crate::role;
use crate::sql::run_kept;
use pgrx::datum::{DatumWithOid, Interval};
use pgrx::prelude::*;
use pgrx::spi::{self, SpiClient};
use std::collections::HashMap;

/// What one write did, per row of the call: `seen[0]` is the parent's last_seen_at as far as
/// this call knows it, `seen[1 + i]` that of scope `i`; `None` where unknown. These are lower
/// bounds (rows only move forward), which `record_activity` caches once the transaction
/// commits.
pub struct Outcome {
    pub seen: Vec<Option<TimestampWithTimeZone>>,
    pub written: i64,
    pub inserted: i64,
    pub unclassified: Vec<String>,
    pub storm_limited: bool,
    /// (SQLSTATE, message) of an operational error that was swallowed.
    pub failed: Option<(String, String)>,
}

impl Outcome {
    fn nothing(rows: usize) -> Outcome {
        Outcome { seen: vec![None; rows], written: 0, inserted: 0, unclassified: Vec::new(), storm_limited: false, failed: None }
    }
}

const INSERT_NEW_PARENT: &str = "
INSERT INTO lifecycle.activity (user_id, client_id, first_seen_at, last_seen_at)
VALUES ($1, $2, $3, $3)
ON CONFLICT (user_id, client_id) DO NOTHING
RETURNING true";

const READ_PARENT: &str = "
SELECT a.last_seen_at FROM lifecycle.activity a
 WHERE a.user_id OPERATOR(pg_catalog.=) $1 AND a.client_id OPERATOR(pg_catalog.=) $2";

const UPSERT_PARENT: &str = "
INSERT INTO lifecycle.activity AS a (user_id, client_id, first_seen_at, last_seen_at)
VALUES ($1, $2, $3, $3)
ON CONFLICT (user_id, client_id) DO UPDATE SET last_seen_at = excluded.last_seen_at
 WHERE (excluded.last_seen_at OPERATOR(pg_catalog.-) a.last_seen_at) OPERATOR(pg_catalog.>) $4
RETURNING a.xmax OPERATOR(pg_catalog.=) 0";

const READ_SCOPES: &str = "
SELECT s.scope, s.last_seen_at FROM lifecycle.activity_scopes s
 WHERE s.user_id OPERATOR(pg_catalog.=) $1 AND s.client_id OPERATOR(pg_catalog.=) $2
   AND s.scope OPERATOR(pg_catalog.=) ANY ($3)";

/// The upsert of `n` scope rows (`$5` ... `$(4 + n)`), in the order given: the scopes arrive
/// sorted, so two grants with overlapping scopes lock their rows in the same order. It also
/// says which of the rows written map to no service (a join with the reference table, which
/// Citus plans with the insert; a subquery in RETURNING it would not). One kept plan per `n`
/// (at most MAX_SCOPES of them).
fn upsert_scopes(n: usize) -> String {
    let rows: Vec<String> = (0..n).map(|i| format!("($1, $2, ${}, $3, $3)", 5 + i)).collect();
    format!(
        "WITH written AS (
            INSERT INTO lifecycle.activity_scopes AS s (user_id, client_id, scope, first_seen_at, last_seen_at)
            VALUES {}
            ON CONFLICT (user_id, client_id, scope) DO UPDATE SET last_seen_at = excluded.last_seen_at
             WHERE (excluded.last_seen_at OPERATOR(pg_catalog.-) s.last_seen_at) OPERATOR(pg_catalog.>) $4
            RETURNING s.scope, s.xmax OPERATOR(pg_catalog.=) 0 AS is_new)
         SELECT w.scope, w.is_new, m.scope IS NULL AS unmapped
           FROM written w LEFT JOIN lifecycle.scope_services m ON m.scope OPERATOR(pg_catalog.=) w.scope",
        rows.join(", ")
    )
}

/// Writes what is due of (user, client) and `scopes` (sorted, unique) at `at`.
pub fn write(user_id: &str, client_id: &str, scopes: &[&str], at: TimestampWithTimeZone, throttle_micros: i64, allow_new: bool) -> Outcome {
    let throttle = Interval::new(0, 0, throttle_micros).unwrap_or_else(|e| error::internal(e));
    let owner = role::owner_of("lifecycle.activity");
    let call = Call { user_id, client_id, scopes, at, throttle, throttle_micros, allow_new };
    let lock_timeout = super::app_lock_timeout();
    let settings: Vec<(&std::ffi::CStr, &str)> = lock_timeout.iter().map(|t| (c"lock_timeout", t.as_str())).collect();
    let result = crate::sql::in_subtransaction(|| {
        crate::sql::with_settings(&settings, || role::run_as(owner, false, || Spi::connect_mut(|client| call.run(client))))
    });
    match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => error::internal(e),
        Err(failure) => Outcome { failed: Some(failure), ..Outcome::nothing(1 + scopes.len()) },
    }
}

struct Call<'a> {
    user_id: &'a str,
    client_id: &'a str,
    scopes: &'a [&'a str],
    at: TimestampWithTimeZone,
    throttle: Interval,
    throttle_micros: i64,
    allow_new: bool,
}

impl Call<'_> {
    /// Whether a row last seen at `seen` is still inside the throttle at `at`.
    fn within_throttle(&self, seen: TimestampWithTimeZone) -> bool {
        self.at.into_inner() <= seen.into_inner().saturating_add(self.throttle_micros)
    }

    fn key(&self) -> [DatumWithOid<'_>; 2] {
        [self.user_id.into(), self.client_id.into()]
    }

    fn run(&self, client: &mut SpiClient<'_>) -> Result<Outcome, spi::Error> {
        let mut out = Outcome::nothing(1 + self.scopes.len());
        let parent_new = self.allow_new && self.insert_new_parent(client)?;
        if parent_new {
            out.seen[0] = Some(self.at);
            out.written = 1;
            out.inserted = 1;
        } else {
            let [user, client_id] = self.key();
            let rows = run_kept(client, true, READ_PARENT, &[user, client_id], Some(1))?;
            let parent_seen = if rows.is_empty() { None } else { rows.first().get::<TimestampWithTimeZone>(1)? };
            match parent_seen {
                None if !self.allow_new => {
                    out.storm_limited = true;
                    return Ok(out);
                }
                Some(seen) if self.within_throttle(seen) => out.seen[0] = Some(seen),
                _ => {
                    if let Some(is_new) = self.upsert_parent(client)? {
                        out.seen[0] = Some(self.at);
                        out.written = 1;
                        out.inserted = i64::from(is_new);
                    }
                }
            }
        }
        if self.scopes.is_empty() {
            return Ok(out);
        }
        let due = if parent_new { self.scopes.to_vec() } else { self.due_scopes(client, &mut out)? };
        if !due.is_empty() {
            self.upsert_scopes(client, &due, &mut out)?;
        }
        Ok(out)
    }

    /// True when the parent row did not exist and this call created it.
    fn insert_new_parent(&self, client: &mut SpiClient<'_>) -> Result<bool, spi::Error> {
        let [user, client_id] = self.key();
        Ok(run_kept(client, true, INSERT_NEW_PARENT, &[user, client_id, self.at.into()], Some(1))?.len() == 1)
    }

    /// `Some(created?)` when the parent was inserted or moved; `None` when a concurrent writer
    /// moved it first (the throttle in ON CONFLICT held).
    fn upsert_parent(&self, client: &mut SpiClient<'_>) -> Result<Option<bool>, spi::Error> {
        let [user, client_id] = self.key();
        let args = [user, client_id, self.at.into(), self.throttle.into()];
        let rows = run_kept(client, true, UPSERT_PARENT, &args, Some(1))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.first().get::<bool>(1)?.unwrap_or(false)))
    }

    /// The scopes whose rows are due (missing, or outside the throttle); fills in `seen` for
    /// the others and notes the storm guard holding back a new one.
    fn due_scopes(&self, client: &mut SpiClient<'_>, out: &mut Outcome) -> Result<Vec<&str>, spi::Error> {
        let [user, client_id] = self.key();
        let mut have = HashMap::new();
        for row in run_kept(client, true, READ_SCOPES, &[user, client_id, self.scopes.to_vec().into()], None)? {
            if let (Some(scope), Some(seen)) = (row.get::<String>(1)?, row.get::<TimestampWithTimeZone>(2)?) {
                have.insert(scope, seen);
            }
        }
        let mut due = Vec::new();
        for (i, scope) in self.scopes.iter().enumerate() {
            match have.get(*scope) {
                Some(seen) if self.within_throttle(*seen) => out.seen[1 + i] = Some(*seen),
                None if !self.allow_new => out.storm_limited = true,
                _ => due.push(*scope),
            }
        }
        Ok(due)
    }

    /// Upserts the due scope rows and finds which of those written map to no service, in one
    /// statement.
    fn upsert_scopes(&self, client: &mut SpiClient<'_>, due: &[&str], out: &mut Outcome) -> Result<(), spi::Error> {
        let [user, client_id] = self.key();
        let mut args = vec![user, client_id, self.at.into(), self.throttle.into()];
        args.extend(due.iter().map(|scope| DatumWithOid::from(*scope)));
        for row in run_kept(client, true, &upsert_scopes(due.len()), &args, None)? {
            let scope = row.get::<String>(1)?.unwrap_or_default();
            if let Some(i) = self.scopes.iter().position(|s| *s == scope) {
                out.seen[1 + i] = Some(self.at);
            }
            out.written += 1;
            out.inserted += i64::from(row.get::<bool>(2)?.unwrap_or(false));
            if row.get::<bool>(3)?.unwrap_or(false) {
                out.unclassified.push(scope);
            }
        }
        // Sorted: the warning about them reads the same whatever order the rows came back in.
        out.unclassified.sort_unstable();
        Ok(())
    }
}
