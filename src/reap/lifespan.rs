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
//! A batch walks the groups (groups.rs) on an index led by the group's columns and then the
//! time column, reads each group's lifespan once, and takes that group's due rows from the
//! same index by a range. A group with nothing due costs two probes and the lifespan's lookup.

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
        let per: Vec<String> = lifespan.per.iter().map(|c| c.name.clone()).collect();
        super::groups::check_index(relid, relation, "lifespan", &per, time, &[]);
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
            Some("E.g. (SELECT make_interval(secs => r.sso_idle_timeout) FROM app.realm r WHERE r.id = t.realm_id)."),
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
