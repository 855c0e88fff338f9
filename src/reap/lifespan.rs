//! Lifespans from settings tables: in place of one `older_than`, a policy's rows live for an
//! interval an SQL expression reads per group of rows (Keycloak's per-realm SSO idle and
//! offline idle, from `REALM` and `REALM_ATTRIBUTE`, with its defaults; Hydra's per-client
//! lifespans). A row of group G is due when its time is older than `now() - lifespan(G)`,
//! read again at every batch, so a change of settings or a new group is followed at once.
//!
//! The expression sees the row's `lifespan_per` columns only (the row is `t`), so that it has
//! one value per group; without `lifespan_per` it sees nothing of the row and is read once
//! per batch. A lifespan that is NULL makes its group's rows never due.
//!
//! A batch stays O(batch + groups): it walks the groups in order on an index led by the
//! group's columns and then the time column (a loose index scan: one probe finds the next
//! group), reads each group's lifespan once, and takes that group's due rows from the same
//! index by a range, until the batch is full. The cursor is (group, time, key): the next
//! batch starts in the group where the last one stopped. A group with nothing due costs two
//! probes and the lifespan's lookup.

use super::filter::{check_filter, Reach};
use super::model::Column;
use crate::error::{self, Code};
use crate::sql::{self, col, ident};
use pgrx::prelude::*;

/// A policy's lifespan: the expression (an interval) and the columns it is read by.
#[derive(Clone)]
pub struct Lifespan {
    pub expression: String,
    pub per: Vec<Column>,
}

impl Lifespan {
    /// The lifespan of the group whose `per` values are `values` (SQL over the caller's
    /// scope): the expression in a scope where the row `t` has the group's columns only.
    pub fn of_group(&self, values: &[String]) -> String {
        let columns: Vec<String> = self.per.iter().zip(values).map(|(c, v)| format!("{v} AS {}", ident(&c.name))).collect();
        format!("(SELECT ({}) FROM (SELECT {}) t)", self.expression, columns.join(", "))
    }

    /// The lifespan of the candidate row `t` (estimates and statements that are no walk).
    pub fn of_row(&self) -> String {
        let values: Vec<String> = self.per.iter().map(|c| col("t", &c.name)).collect();
        self.of_group(&values)
    }

    /// `t`'s group columns equal the walk's current group (`grp.g0, ...`).
    pub fn in_current_group(&self) -> String {
        let pairs: Vec<String> = self.per.iter().enumerate().map(|(i, c)| format!("{} = grp.g{i}", col("t", &c.name))).collect();
        pairs.join(" AND ")
    }

    /// The candidates of a batch as a walk over the groups of `relation` (quoted): `rows` is
    /// the candidates statement of one group (the current group is `grp`: its columns `g0...`
    /// and its lifespan `span`), which must carry `grp`'s columns out as `gr0...`. `start`:
    /// the cursor's group values (SQL), where the walk begins; None: the first group.
    ///
    /// Each step of the recursive CTE finds the next group with one index probe (the first
    /// entry after the current group). PostgreSQL runs a recursive CTE as far as its reader
    /// asks, and the LIMIT stops the reader when the batch is full, so the walk goes only as
    /// far as the batch needs. Groups are visited in order and each group's rows come in
    /// (time, key) order, so the candidates come in cursor order without sorting them, and
    /// they are numbered in that order (`wn`, a window that streams): the greatest number is
    /// the batch's last row, the next cursor.
    pub fn walk(&self, relation: &str, rows: &str, start: Option<Vec<String>>) -> String {
        let names: Vec<String> = self.per.iter().map(|c| col("t", &c.name)).collect();
        let aliases: Vec<String> = (0..self.per.len()).map(|i| format!("g{i}")).collect();
        let selected: Vec<String> = names.iter().zip(&aliases).map(|(n, a)| format!("{n} AS {a}")).collect();
        let row = |alias: &str| aliases.iter().map(|a| format!("{alias}.{a}")).collect::<Vec<_>>();
        let first = match start {
            Some(values) => format!("({}) >= ({})", names.join(", "), values.join(", ")),
            None => names.iter().map(|n| format!("{n} IS NOT NULL")).collect::<Vec<_>>().join(" AND "),
        };
        let next = |condition: &str| {
            format!("SELECT {} FROM {relation} t WHERE {condition} ORDER BY {} LIMIT 1", selected.join(", "), names.join(", "))
        };
        format!(
            "WITH RECURSIVE grp AS (
                 SELECT f.*, {first_span} AS span FROM ({first}) f
               UNION ALL
                 SELECT n.*, {next_span} AS span FROM grp, LATERAL ({next}) n)
             SELECT c.*, pg_catalog.row_number() OVER () AS wn FROM grp CROSS JOIN LATERAL ({rows}) c LIMIT $2",
            first_span = self.of_group(&row("f")),
            first = next(&first),
            next_span = self.of_group(&row("n")),
            next = next(&format!("({}) > ({})", names.join(", "), row("grp").join(", "))),
        )
    }
}

/// add_policy's lifespan and lifespan_per, checked for the table `relid` (`relation`,
/// quoted) with time column `time_column` (None: a computed time); the caller has checked
/// that lifespan_per's columns exist and resolved them as `per`. Returns the lifespan.
pub fn check_options(
    relid: pg_sys::Oid,
    relation: &str,
    time_column: Option<&str>,
    has_older_than: bool,
    keeps_newest: bool,
    lifespan: Option<&str>,
    per: Option<Vec<Column>>,
) -> Option<Lifespan> {
    let Some(expression) = lifespan else {
        if per.is_some() {
            error::invalid_argument(
                "lifespan_per needs lifespan".into(),
                "E.g. lifespan => '<interval read per realm>', lifespan_per => '{realm_id}'.",
            );
        }
        return None;
    };
    if has_older_than {
        error::invalid_argument(
            "older_than and lifespan both say how long rows live".into(),
            "Pass older_than for one interval for every row, or lifespan for an interval read per group.",
        );
    }
    let unsupported = |what: String, detail: Option<String>, hint: &str| -> ! {
        error::raise(Code::ERRCODE_FEATURE_NOT_SUPPORTED, what, detail, Some(hint))
    };
    let Some(time) = time_column else {
        unsupported("lifespan with a computed time is not supported".into(), None, "Read the lifespan against a time column.")
    };
    if keeps_newest {
        unsupported("lifespan with keep_newest is not supported".into(), None, "Use one of the two in a policy.");
    }
    if crate::citus::distribution(relid).is_some() {
        unsupported(
            format!("lifespan on Citus table {relation} is not supported"),
            Some("A Citus table's batches run shard by shard, where the settings tables are not at hand under their names.".into()),
            "Use older_than on a Citus table.",
        );
    }
    let lifespan = Lifespan { expression: expression.to_string(), per: per.unwrap_or_default() };
    // One expression, nothing volatile, settings read by index probes, as a filter's
    // subqueries are (filter.rs), and as the registering role, who must be able to read them.
    check_filter(relid, relation, &format!("({expression}) IS NOT NULL"), Reach::RelatedRows);
    check_scope_and_type(&lifespan);
    // Without groups the lifespan is one interval per batch: the time index serves as it
    // does older_than's (add_policy warns without one).
    if !lifespan.per.is_empty() {
        check_index(relid, relation, time, &lifespan.per);
    }
    Some(lifespan)
}

/// The expression reads nothing of the row but the group's columns, and is an interval.
/// Evaluated once, for a group of NULLs, in the scope the batches give it.
fn check_scope_and_type(lifespan: &Lifespan) {
    let nulls: Vec<String> = lifespan.per.iter().map(|c| format!("NULL::{}", c.type_name)).collect();
    let statement = format!("SELECT pg_catalog.pg_typeof({})::text", lifespan.of_group(&nulls));
    let found = sql::in_subtransaction(|| Spi::get_one::<String>(&statement).unwrap_or_else(|e| error::internal(e)));
    let names: Vec<String> = lifespan.per.iter().map(|c| sql::literal(&c.name)).collect();
    let scope = if names.is_empty() { "no column of the row".to_string() } else { format!("only the row's {}", names.join(", ")) };
    match found {
        Ok(Some(t)) if t == "interval" => {}
        Ok(t) => error::raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("lifespan {} is {}, not an interval", sql::literal(&lifespan.expression), t.unwrap_or_default()),
            None,
            Some("E.g. make_interval(secs => r.sso_idle_timeout), or a CASE that gives an interval."),
        ),
        Err((sqlstate, message)) => error::raise(
            same_code(&sqlstate),
            format!("lifespan {}: {message}", sql::literal(&lifespan.expression)),
            Some(format!("A lifespan reads {scope} (name them in lifespan_per), and other tables through subqueries.")),
            Some("E.g. (SELECT make_interval(secs => r.sso_idle_timeout) FROM app.realm r WHERE r.id = realm_id)."),
        ),
    }
}

/// The codes a lifespan's check passes on as they are; any other failure is 22023.
fn same_code(sqlstate: &str) -> Code {
    match sqlstate {
        "42703" => Code::ERRCODE_UNDEFINED_COLUMN,
        "42P01" => Code::ERRCODE_UNDEFINED_TABLE,
        "42501" => Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        "42883" => Code::ERRCODE_UNDEFINED_FUNCTION,
        _ => Code::ERRCODE_INVALID_PARAMETER_VALUE,
    }
}

/// An index leads with the group's columns, in lifespan_per's order, and then the time
/// column: the walk's next-group probe and each group's range both need that order.
fn check_index(relid: pg_sys::Oid, relation: &str, time: &str, per: &[Column]) {
    let mut leading: Vec<String> = per.iter().map(|c| c.name.clone()).collect();
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
        error::raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lifespan needs an index on {relation} led by {}", columns.join(", ")),
            Some("A batch walks the groups in that index's order and takes each group's due rows from it by a range.".into()),
            Some(format!("CREATE INDEX ON {relation} ({})", columns.join(", ")).as_str()),
        );
    }
}
