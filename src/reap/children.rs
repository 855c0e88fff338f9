//! The children of a policy's table that a batch acts on or is held back by, kept for the
//! session until a catalog change could alter them.
//!
//! Which children a policy has depends on the policy's row (`delete_from`, `block_on`,
//! `dependents`) and on the foreign keys that reference its table. Asking the catalog every
//! batch (lifecycle._policy_children scans pg_constraint, which has no index on confrelid)
//! cost ~0.4 ms, about a tenth of a 1000-row batch. So the answer is kept per policy, keyed by
//! the version of its row, and dropped through PostgreSQL's own invalidation: adding or
//! dropping a foreign key creates or drops triggers on the referenced table, which invalidates
//! its relcache entry, as renaming a table or a column does for that table; renaming a schema
//! invalidates its pg_namespace entry.

use super::batch::{Child, Handling};
use crate::error;
use crate::sql;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// The children a batch acts on or is held back by (lifecycle._policy_children decides which:
/// sql/reap.sql), and those a foreign key deletes with the row (a hold on them keeps it).
const CHILDREN: &str = "
SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(cc.relname),
       k.columns::text[], k.parent_columns::text[],
       CASE WHEN k.handling = 'fk_action' THEN 'cascade' ELSE k.handling END, k.relation::oid
  FROM lifecycle._policy_children($1) k
  JOIN pg_catalog.pg_class cc ON cc.oid = k.relation
  JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace
 WHERE k.handling IN ('delete', 'block') OR (k.handling = 'fk_action' AND k.on_delete = 'CASCADE')";

/// What was read for one policy: at which version of its row, for which table.
struct Kept {
    version: String,
    relid: pg_sys::Oid,
    children: Vec<Child>,
}

thread_local! {
    static KEPT: RefCell<HashMap<i32, Kept>> = RefCell::new(HashMap::new());
}

/// Has the backend call `forget` when a relation's or a schema's catalog entry changes.
pub fn init() {
    // SAFETY: registering invalidation callbacks from _PG_init, as extensions do; the
    // functions live as long as the library.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(forget_relation), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(pg_sys::SysCacheIdentifier::NAMESPACEOID as i32, Some(forget_all), pg_sys::Datum::from(0));
    }
}

/// The children of policy `id` on table `relid`, whose row is at `version` (xmin and ctid:
/// a new version of the row, even in the same transaction, has another).
pub fn of_policy(id: i32, version: &str, relid: pg_sys::Oid) -> Vec<Child> {
    let kept = KEPT.with(|kept| kept.borrow().get(&id).filter(|k| k.version == version && k.relid == relid).map(|k| k.children.clone()));
    if let Some(children) = kept {
        return children;
    }
    let children = read(id);
    KEPT.with(|kept| kept.borrow_mut().insert(id, Kept { version: version.to_owned(), relid, children: children.clone() }));
    children
}

fn read(id: i32) -> Vec<Child> {
    Spi::connect_mut(|client| {
        sql::run_kept(client, false, CHILDREN, &[id.into()], None)?
            .map(|row| {
                Ok(Child {
                    relation: row.get(1)?.unwrap_or_default(),
                    columns: row.get(2)?.unwrap_or_default(),
                    parent_columns: row.get(3)?.unwrap_or_default(),
                    handling: row
                        .get::<String>(4)?
                        .as_deref()
                        .and_then(Handling::parse)
                        .unwrap_or_else(|| error::internal("unknown child handling")),
                    relid: row.get(5)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e))
}

/// Relcache invalidation of `relid` (InvalidOid: of every relation): forgets the policies
/// whose table or children it is.
unsafe extern "C-unwind" fn forget_relation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // try_with/try_borrow_mut: never panic inside a callback. The map is borrowed only in
    // of_policy's two short closures, which touch no catalog, so no invalidation arrives then.
    let _ = KEPT.try_with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            kept.retain(|_, k| relid != pg_sys::InvalidOid && k.relid != relid && k.children.iter().all(|c| c.relid != relid));
        }
    });
}

/// A schema's entry changed (a rename, say): the kept names may be stale, so forget them all.
unsafe extern "C-unwind" fn forget_all(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    let _ = KEPT.try_with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            kept.clear();
        }
    });
}
