//! Keep the newest N: a row is due only while at least N newer rows of its group (the rows
//! with its `keep_per` values, or the whole table) exist, newer by the policy's time and then
//! its key (MAS's policy-data prune keeps 10; Discourse keeps 60 sessions per user). With
//! keep_per, a batch walks the groups (groups.rs) on an index on (group, time, key): each
//! group's N-th newest row is read once, by one probe, and the group's rows older than it are
//! due. Without, each candidate row asks the time index for its N newer rows.

use super::filter::{check_filter, Reach};
use super::model::Column;
use crate::error::{self, Code};
use crate::sql::{self, col};
use pgrx::prelude::*;

/// add_policy's keep_newest and keep_per, checked for the table `relid` (`relation`, quoted)
/// with primary key `keys` and time column `time_column` (None: a computed time); the
/// caller has checked that keep_per's columns exist.
pub fn check_options(
    relid: pg_sys::Oid,
    relation: &str,
    keys: &[String],
    time_column: Option<&str>,
    keep_newest: Option<i32>,
    keep_per: Option<&[String]>,
) {
    let Some(newest) = keep_newest else {
        if keep_per.is_some() {
            error::invalid_argument("keep_per needs keep_newest".into(), "E.g. keep_newest => 60, keep_per => '{user_id}'.");
        }
        return;
    };
    let Some(time) = time_column else {
        error::raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            "keep_newest with a computed time is not supported",
            None,
            Some("Keep the newest rows by a time column."),
        )
    };
    let group = keep_per.unwrap_or_default();
    if crate::citus::distribution(relid).is_some() {
        error::raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("keep_newest on Citus table {relation} is not supported"),
            Some("A Citus table's batches run shard by shard, and a group's newer rows may live on other shards.".into()),
            None,
        );
    }
    check(relid, relation, keys, time, newest, group);
    // The lookup as a batch plans it: an index probe per candidate, or refused (22023).
    check_filter(relid, relation, &condition(relation, keys, time, group, newest), Reach::RelatedRows);
}

/// The condition over the candidate row `t` of `relation` (quoted): N rows of its group come
/// after it in (time, key) order. `OFFSET N - 1` makes the EXISTS read at most N index
/// entries, and keeps it a subquery run per candidate (the planner pulls no EXISTS with an
/// OFFSET up into a join), so it is spliced as it is: wrapped as a correlated filter is,
/// `(SELECT (...))`, it cost a quarter more. The row comparison alone is the index's range
/// (on (group, time, key) all of it, on (group, time) its first column): a `time >= t.time`
/// beside it cost a fifth more. A row whose group value is NULL belongs to no group, so it
/// is never due.
pub fn condition(relation: &str, keys: &[String], time: &str, group: &[String], newest: i32) -> String {
    let mut order: Vec<&str> = vec![time];
    order.extend(keys.iter().map(String::as_str).filter(|k| *k != time));
    let row = |alias: &str| order.iter().map(|c| col(alias, c)).collect::<Vec<_>>().join(", ");
    let mut conditions: Vec<String> = group.iter().map(|g| format!("{} = {}", col("k", g), col("t", g))).collect();
    conditions.push(format!("({}) > ({})", row("k"), row("t")));
    format!("EXISTS (SELECT 1 FROM {relation} k WHERE {} OFFSET {})", conditions.join(" AND "), newest - 1)
}

/// Checks keep_newest and keep_per for the table `relid` whose time is column `time`: N > 0,
/// the group's columns exist, and an index leads with them (in any order) and then the time
/// column, without which each candidate would scan its whole group. The hint is the CREATE
/// INDEX that serves it best: (group, time, key).
fn check(relid: pg_sys::Oid, relation: &str, keys: &[String], time: &str, newest: i32, group: &[String]) {
    if newest <= 0 {
        error::invalid_argument(format!("keep_newest must be positive, not {newest}"), "E.g. keep_newest => 10: the 10 newest rows stay.");
    }
    if !group.is_empty() {
        // A batch walks the groups (groups.rs), in the index's order.
        super::groups::check_index(relid, relation, "keep_newest", group, time, keys);
        return;
    }
    let led = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (
           SELECT 1 FROM pg_catalog.pg_index i
            WHERE i.indrelid = $1 AND i.indisvalid AND i.indpred IS NULL AND i.indnkeyatts > cardinality($2::text[])
              AND (SELECT bool_and(CASE WHEN k.ord <= cardinality($2::text[]) THEN a.attname::text = ANY ($2::text[])
                                        ELSE a.attname::text = $3 END)
                     FROM unnest(i.indkey[0:cardinality($2::text[])]) WITH ORDINALITY AS k(attnum, ord)
                     LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum))",
        &[relid.into(), group.to_vec().into(), time.into()],
    )
    .unwrap_or_else(|e| error::internal(e))
    .unwrap_or(false);
    if !led {
        // With the key after the time, the lookups read the index only (where the visibility
        // map allows), and the whole row comparison is the index's range.
        let mut columns: Vec<String> = group.iter().map(sql::ident).collect();
        columns.push(sql::ident(time));
        columns.extend(keys.iter().filter(|k| *k != time && !group.contains(k)).map(sql::ident));
        error::raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("keep_newest needs an index on {relation} led by {}", columns[..=group.len()].join(", ")),
            Some("Each candidate row looks up the newer rows of its group; without that index it reads the whole group.".into()),
            Some(format!("CREATE INDEX ON {relation} ({})", columns.join(", ")).as_str()),
        );
    }
}

/// The N-th newest row of the group whose `per` values are `group` (SQL), as `b0` (its time)
/// and `b1...` (its key after the time): one backward probe of the (group, time, key) index.
/// A group of fewer than N rows has none, and nothing of it is due.
pub fn bound(relation: &str, per: &[Column], group: &[String], time: &str, keys: &[String], newest: i32) -> String {
    let order: Vec<&str> = std::iter::once(time).chain(keys.iter().map(String::as_str)).collect();
    let selected: Vec<String> = order.iter().enumerate().map(|(i, c)| format!("{} AS b{i}", col("k", c))).collect();
    let fixed: Vec<String> = per.iter().zip(group).map(|(c, v)| format!("{} = {v}", col("k", &c.name))).collect();
    let descending: Vec<String> = order.iter().map(|c| format!("{} DESC", col("k", c))).collect();
    format!(
        "SELECT {} FROM {relation} k WHERE {} ORDER BY {} OFFSET {} LIMIT 1",
        selected.join(", "),
        fixed.join(" AND "),
        descending.join(", "),
        newest - 1
    )
}

/// Row `t` is older, by (time, key), than its walked group's bound (`grp.b0...`).
pub fn below_bound(time: &str, keys: &[String]) -> String {
    let row: Vec<String> = std::iter::once(time).chain(keys.iter().map(String::as_str)).map(|c| col("t", c)).collect();
    let bound: Vec<String> = (0..row.len()).map(|i| format!("grp.b{i}")).collect();
    format!("({}) < ({})", row.join(", "), bound.join(", "))
}
