//! Walks over groups of rows: a batch of a policy whose rule has a value per group (a lifespan
//! read per realm, lifespan.rs; the newest N rows of each user, keep.rs) takes its candidates
//! group by group, on an index led by the group's columns and then the time column.
//!
//! Each step of a recursive CTE finds the next group with one index probe (the first entry
//! after the current group: a loose index scan) and reads the group's own values once (its
//! lifespan, the N-th newest row). PostgreSQL runs a recursive CTE as far as its reader asks,
//! and the LIMIT stops the reader when the batch is full, so the walk goes only as far as the
//! batch needs. Groups come in order and each group's rows in (time, key) order, so the
//! candidates come in cursor order, (group, time, key), without sorting them; they are
//! numbered in that order (`wn`, a window that streams), and the last one is the next cursor.
//!
//! A group with nothing due gives one row of NULLs (a marker), which counts towards the
//! batch's limit and can be its last row: a batch visits at most `limit` groups and rows,
//! however few are due, and the next batch starts after the last group visited (a cursor
//! whose time is NULL is past every row of its group).

use super::model::Column;
use crate::error::{self, Code};
use crate::sql::{col, ident};
use pgrx::prelude::*;

/// `t`'s group columns equal the walk's current group (`grp.g0, ...`).
pub fn in_current_group(per: &[Column]) -> String {
    let pairs: Vec<String> = per.iter().enumerate().map(|(i, c)| format!("{} = grp.g{i}", col("t", &c.name))).collect();
    pairs.join(" AND ")
}

/// The group's columns of the group row `alias` (`alias.g0, ...`).
pub fn group_of(alias: &str, per: &[Column]) -> Vec<String> {
    (0..per.len()).map(|i| format!("{alias}.g{i}")).collect()
}

/// The candidates of a batch as a walk over the groups `per` of `relation` (quoted).
///
/// `rows` is the candidates statement of one group (the current group is `grp`: its columns
/// `g0...` and what `per_group` adds). `per_group(alias)` gives, for the group row `alias`,
/// the select items and the joins (LATERAL, over `alias`) that add the group's own values.
/// `start`: the cursor as (columns of `t`, values): the group's columns and then the time's;
/// the walk begins at the first group with a row at or after it. None: the first group.
pub fn walk(
    relation: &str,
    per: &[Column],
    rows: &str,
    start: Option<(Vec<String>, Vec<String>)>,
    per_group: impl Fn(&str) -> (String, String),
) -> String {
    let names: Vec<String> = per.iter().map(|c| col("t", &c.name)).collect();
    let selected: Vec<String> = names.iter().enumerate().map(|(i, n)| format!("{n} AS g{i}")).collect();
    let first = match start {
        // A row comparison with the time: a cursor whose time is NULL (a marker's) starts
        // after its group, one with a time inside it.
        Some((columns, values)) => format!("({}) >= ({})", columns.join(", "), values.join(", ")),
        None => names.iter().map(|n| format!("{n} IS NOT NULL")).collect::<Vec<_>>().join(" AND "),
    };
    let next = |condition: &str| {
        format!("SELECT {} FROM {relation} t WHERE {condition} ORDER BY {} LIMIT 1", selected.join(", "), names.join(", "))
    };
    let (first_items, first_joins) = per_group("f");
    let (next_items, next_joins) = per_group("n");
    let carried: Vec<String> = (0..per.len()).map(|i| format!("grp.g{i} AS gr{i}")).collect();
    format!(
        "WITH RECURSIVE grp AS (
             SELECT f.*, {first_items} FROM ({first}) f {first_joins}
           UNION ALL
             SELECT n.*, {next_items} FROM grp, LATERAL ({next}) n {next_joins})
         SELECT c.*, {carried}, pg_catalog.row_number() OVER () AS wn
           FROM grp LEFT JOIN LATERAL ({rows}) c ON true LIMIT $2",
        first = next(&first),
        next = next(&format!("({}) > ({})", names.join(", "), group_of("grp", per).join(", "))),
        carried = carried.join(", "),
    )
}

/// An index leads with the group's columns `per`, in their order, and then the time column:
/// a walk's next-group probe and each group's range both need that order. Raises 22023 for
/// `rule` (the option that walks) without one; the hint's index ends with `more` (the key).
pub fn check_index(relid: pg_sys::Oid, relation: &str, rule: &str, per: &[String], time: &str, more: &[String]) {
    let mut leading: Vec<String> = per.to_vec();
    leading.push(time.to_string());
    let led = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (
           SELECT 1 FROM pg_catalog.pg_index i
            WHERE i.indrelid = $1 AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indnkeyatts >= cardinality($2::text[])
              AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                     FROM unnest(i.indkey[0:cardinality($2::text[]) - 1]) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) = $2::text[])",
        &[relid.into(), leading.clone().into()],
    )
    .unwrap_or_else(|e| error::internal(e))
    .unwrap_or(false);
    if !led {
        let columns: Vec<String> = leading.iter().map(|c| ident(c.as_str())).collect();
        let mut hinted = columns.clone();
        hinted.extend(more.iter().filter(|m| !leading.contains(m)).map(|m| ident(m.as_str())));
        error::raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{rule} needs an index on {relation} led by {}", columns.join(", ")),
            Some("A batch walks the groups in that index's order and takes each group's due rows from it by a range.".into()),
            Some(format!("CREATE INDEX ON {relation} ({})", hinted.join(", ")).as_str()),
        );
    }
}
