//! Policies: validate add_policy's options against the catalogs and store the definition.
//!
//! Everything a batch needs is checked here once, as the registering role, so that a bad
//! table, column, type, option or filter is a clear error at registration instead of a
//! failing job at 3 a.m.

use crate::error::{self, Code};
use crate::role;
use crate::sql;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::datum::Interval;
use pgrx::{is_a, PgList};
use std::ffi::CString;

pub const TIME_KINDS: &[&str] = &["timestamptz", "timestamp", "unix_ms", "unix_s", "ulid"];

/// A column of the policy's table as the catalogs describe it.
struct Column {
    type_oid: pg_sys::Oid,
    type_name: String,
    not_null: bool,
}

fn column(relid: pg_sys::Oid, name: &str, relation: &str) -> Column {
    let found = sql::optional_row(
        "SELECT a.atttypid, pg_catalog.format_type(a.atttypid, NULL), a.attnotnull
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[relid.into(), name.into()],
        |row| {
            Ok(Column {
                type_oid: row.get(1)?.unwrap_or_default(),
                type_name: row.get(2)?.unwrap_or_default(),
                not_null: row.get(3)?.unwrap_or(false),
            })
        },
    );
    found.unwrap_or_else(|| {
        error::raise(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!("column {} of {relation} does not exist", sql::literal(name)),
            None,
            Some("Name an existing column of the policy's table."),
        )
    })
}

/// `name` must be a plain lowercase identifier: it appears in NOTICEs, job names and audit
/// rows, so nothing in it may need quoting.
fn check_policy_name(name: &str) {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        error::invalid_argument(
            format!("invalid policy name {}", sql::literal(name)),
            "A policy name is 1 to 63 characters: a lowercase letter, then lowercase letters, digits or _.",
        );
    }
}

/// The table's quoted, schema-qualified name after checking it is a table the caller owns.
fn check_relation(relid: pg_sys::Oid) -> String {
    let found = sql::optional_row(
        "SELECT c.relkind::text, pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = $1",
        &[relid.into()],
        |row| Ok((row.get::<String>(1)?, row.get::<String>(2)?.unwrap_or_default())),
    );
    let Some((kind, qualified)) = found else {
        error::raise(Code::ERRCODE_UNDEFINED_TABLE, format!("relation with OID {relid:?} does not exist"), None, None)
    };
    if !matches!(kind.as_deref(), Some("r" | "p")) {
        error::raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{qualified} is not a table"),
            None,
            Some("Policies act on ordinary or partitioned tables."),
        );
    }
    if !unsafe { pg_sys::pg_class_ownercheck(relid, role::current()) } {
        error::raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {qualified} to register a policy on it"),
            None,
            Some("A policy acts with the rights of the role that registers it; register it as the table's owner."),
        );
    }
    qualified
}

/// The single-column primary key (name, type) that batches use as keyset tiebreak and key.
fn primary_key(relid: pg_sys::Oid, relation: &str) -> (String, String) {
    sql::optional_row(
        "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL)
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = $1 AND i.indisprimary AND i.indnatts = 1",
        &[relid.into()],
        |row| Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default())),
    )
    .unwrap_or_else(|| {
        error::raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{relation} has no single-column primary key"),
            None,
            Some("Batches identify rows by a single-column primary key; add one (an identity or ULID column)."),
        )
    })
}

/// The time kind: as given (checked against the column type) or inferred from it.
fn time_kind(given: Option<&str>, col: &Column, column_name: &str) -> &'static str {
    let family = match col.type_name.as_str() {
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "bigint" | "integer" | "smallint" | "numeric" => "number",
        "uuid" | "text" | "character varying" | "character" => "ulid",
        _ => "other",
    };
    let kind = match given {
        None => match family {
            "timestamptz" => "timestamptz",
            "timestamp" => "timestamp",
            _ => error::invalid_argument(
                format!("cannot infer the time kind of column {} ({})", sql::literal(column_name), col.type_name),
                "Say time_kind => 'unix_ms' or 'unix_s' for numbers, 'ulid' for ULIDs stored as uuid or text.",
            ),
        },
        Some(k) => TIME_KINDS.iter().copied().find(|known| *known == k).unwrap_or_else(|| {
            error::invalid_argument(
                format!("unknown time_kind {}", sql::literal(k)),
                "time_kind is one of timestamptz, timestamp, unix_ms, unix_s, ulid.",
            )
        }),
    };
    let fits = match kind {
        "unix_ms" | "unix_s" => family == "number",
        other => family == other,
    };
    if !fits {
        error::raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("time_kind {kind} does not fit column {} of type {}", sql::literal(column_name), col.type_name),
            None,
            Some("timestamptz/timestamp need those types, unix_ms/unix_s an integer column, ulid a uuid or text column."),
        );
    }
    kind
}

fn names(list: Option<Vec<Option<String>>>, what: &str) -> Option<Vec<String>> {
    let list = list?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let Some(item) = item else { error::null_argument(&format!("an element of {what}"), "Remove NULLs from the array.") };
        if out.contains(&item) {
            error::invalid_argument(format!("{what} names column {} twice", sql::literal(&item)), "Name each column once.");
        }
        out.push(item);
    }
    if out.is_empty() {
        error::invalid_argument(format!("{what} must not be empty"), "Leave it out (NULL) instead.");
    }
    Some(out)
}

/// A dependent table to delete from first: `schema.table(column)`.
struct Child {
    relid: pg_sys::Oid,
    column: String,
}

fn parse_child(spec: &str, key_type: pg_sys::Oid) -> Child {
    let bad = || -> ! {
        error::invalid_argument(
            format!("invalid delete_from entry {}", sql::literal(spec)),
            "Write each entry as 'schema.table(column)', e.g. 'mattermost.sessions(useraccesstokenid)'.",
        )
    };
    let (relation, rest) = spec.rsplit_once('(').unwrap_or_else(|| bad());
    let column = rest.strip_suffix(')').unwrap_or_else(|| bad()).trim();
    // regclass input does the quoting rules and raises 42P01 for an unknown table.
    let relid = Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::text::regclass::oid", &[relation.trim().into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or_else(|| bad());
    child(relid, column, key_type)
}

fn child(relid: pg_sys::Oid, column_name: &str, key_type: pg_sys::Oid) -> Child {
    let name = Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[relid.into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or_default();
    let col = column(relid, column_name, &name);
    if col.type_oid != key_type {
        error::raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("{name}.{column_name} ({}) cannot reference the policy table's key", col.type_name),
            None,
            Some("A dependent column must have the type of the policy table's primary key."),
        );
    }
    let allowed = Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.has_table_privilege($1, 'SELECT') AND pg_catalog.has_table_privilege($1, 'DELETE')",
        &[relid.into()],
    )
    .unwrap_or_else(|e| error::internal(e))
    .unwrap_or(false);
    if !allowed {
        error::raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to delete from dependent table {name}"),
            None,
            Some("The policy's owner needs SELECT and DELETE on every table it deletes dependents from."),
        );
    }
    Child { relid, column: column_name.to_string() }
}

/// Single-column FKs that reference the table's key from another table: (child, column, on delete).
fn referencing_fks(relid: pg_sys::Oid) -> Vec<(pg_sys::Oid, String, String)> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT c.conrelid, a.attname::text, c.confdeltype::text
                   FROM pg_catalog.pg_constraint c
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                  WHERE c.confrelid = $1 AND c.contype = 'f' AND cardinality(c.conkey) = 1
                  ORDER BY c.oid",
                None,
                &[relid.into()],
            )?
            .map(|row| Ok((row.get::<pg_sys::Oid>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default(), row.get::<String>(3)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e))
}

/// A delete would fail on FKs that neither act themselves (CASCADE/SET NULL/SET DEFAULT)
/// nor are handled by the policy: refuse to register such a policy.
fn check_deletes_can_succeed(fks: &[(pg_sys::Oid, String, String)], relation: &str, children: &[Child]) {
    for (child_rel, child_col, action) in fks {
        let child_rel = *child_rel;
        let handled = children.iter().any(|c| c.relid == child_rel && c.column == *child_col);
        if matches!(action.as_str(), "a" | "r") && !handled {
            let child = Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[child_rel.into()])
                .unwrap_or_else(|e| error::internal(e))
                .unwrap_or_default();
            error::raise(
                Code::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                format!("{child}.{child_col} references {relation} with ON DELETE {}: deleting a referenced row would fail",
                    if action == "a" { "NO ACTION" } else { "RESTRICT" }),
                None,
                Some("Use dependents => 'block' to keep referenced rows until their children are gone, or dependents => 'delete' to delete the children first."),
            );
        }
    }
}

/// The filter must be one boolean expression over the policy's row and nothing else: it is
/// parsed on its own (so it cannot close a parenthesis and continue the statement) and
/// planned against the table (so it cannot reach another table through a subquery).
fn check_filter(relid: pg_sys::Oid, relation: &str, filter: &str) {
    let hint = "A filter is one boolean expression over the policy table's columns, e.g. 'finished_at IS NOT NULL'.";
    let text = CString::new(format!("SELECT ({filter})"))
        .unwrap_or_else(|_| error::invalid_argument("filter contains a NUL character".into(), hint));
    // SAFETY: raw_parser reads the C string and returns a palloc'd list (or raises 42601).
    let single_expression = unsafe {
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT));
        stmts.len() == 1
            && stmts.get_ptr(0).is_some_and(|raw| {
                let node = (*raw).stmt;
                if !is_a(node, pg_sys::NodeTag::T_SelectStmt) {
                    return false;
                }
                let s = &*(node as *const pg_sys::SelectStmt);
                s.op == pg_sys::SetOperation::SETOP_NONE
                    && PgList::<pg_sys::Node>::from_pg(s.targetList).len() == 1
                    && s.fromClause.is_null() && s.whereClause.is_null() && s.withClause.is_null()
                    && s.groupClause.is_null() && s.havingClause.is_null() && s.sortClause.is_null()
                    && s.limitCount.is_null() && s.limitOffset.is_null() && s.lockingClause.is_null()
                    && s.distinctClause.is_null() && s.intoClause.is_null() && s.windowClause.is_null()
            })
    };
    if !single_expression || !sql::parens_stay_balanced(filter) {
        error::invalid_argument(format!("filter {} is not a single expression", sql::literal(filter)), hint);
    }
    // Planning checks columns and the boolean type (42703 / 42804 from Postgres itself).
    let plan = Spi::get_one::<pgrx::Json>(&format!(
        "EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) SELECT 1 FROM {relation} t WHERE ({filter})"
    ))
    .unwrap_or_else(|e| error::internal(e))
    .map(|j| j.0)
    .unwrap_or_default();
    let allowed: Vec<(String, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT n.nspname::text, c.relname::text
                   FROM (SELECT $1 AS relid UNION SELECT relid FROM pg_catalog.pg_partition_tree($1)) p
                   JOIN pg_catalog.pg_class c ON c.oid = p.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
                None,
                &[relid.into()],
            )?
            .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e));
    let mut foreign = false;
    walk_plan(&plan, &mut |node| {
        if node.get("Subplan Name").is_some() {
            foreign = true;
        }
        if let (Some(schema), Some(name)) = (node.get("Schema").and_then(|v| v.as_str()), node.get("Relation Name").and_then(|v| v.as_str())) {
            if !allowed.iter().any(|(s, n)| s == schema && n == name) {
                foreign = true;
            }
        }
    });
    if foreign {
        error::invalid_argument(format!("filter {} reaches beyond the policy's table", sql::literal(filter)), hint);
    }
}

fn walk_plan(value: &serde_json::Value, visit: &mut impl FnMut(&serde_json::Map<String, serde_json::Value>)) {
    match value {
        serde_json::Value::Object(map) => {
            visit(map);
            map.values().for_each(|v| walk_plan(v, visit));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| walk_plan(v, visit)),
        _ => {}
    }
}

fn required<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| error::null_argument(name, "See docs/reaping.md for add_policy's arguments."))
}

/// Validates and stores a policy; returns its id. Called by lifecycle.add_policy (sql/reap.sql),
/// which gives the SQL signature its named, defaulted arguments.
#[allow(clippy::too_many_arguments)]
#[pg_extern(schema = "lifecycle", name = "_add_policy")]
#[search_path(pg_catalog, pg_temp)]
fn add_policy(
    name: Option<&str>,
    relation: Option<pg_sys::Oid>,
    time_column: Option<&str>,
    older_than: Option<Interval>,
    time_kind_given: Option<&str>,
    filter: Option<&str>,
    nullify: Option<Vec<Option<String>>>,
    dependents: Option<&str>,
    delete_from: Option<Vec<Option<String>>>,
    audit: Option<Vec<Option<String>>>,
    batch_size: Option<i32>,
    enabled: Option<bool>,
) -> i32 {
    let name = required(name, "name");
    check_policy_name(name);
    let relid = required(relation, "relation");
    let time_column = required(time_column, "time_column");
    let dependents = required(dependents, "dependents");
    let batch_size = required(batch_size, "batch_size");
    let enabled = required(enabled, "enabled");

    let relation = check_relation(relid);
    let (key_column, key_type) = primary_key(relid, &relation);
    let key_type_oid = column(relid, &key_column, &relation).type_oid;
    let time_col = column(relid, time_column, &relation);
    let kind = time_kind(time_kind_given, &time_col, time_column);
    if kind == "ulid" && older_than.is_none() {
        error::invalid_argument(
            "a ULID time column records creation time, so it needs older_than".into(),
            "E.g. older_than => '7 days'.",
        );
    }
    if older_than.as_ref().is_some_and(|i| i.as_micros() <= 0) {
        error::invalid_argument("older_than must be a positive interval".into(), "E.g. older_than => '30 days'.");
    }
    let nullify = names(nullify, "nullify");
    for c in nullify.iter().flatten() {
        let col = column(relid, c, &relation);
        if col.not_null || *c == key_column {
            error::invalid_argument(
                format!("column {} cannot be nullified", sql::literal(c)),
                "nullify names nullable columns that are not the primary key.",
            );
        }
    }
    let audit = names(audit, "audit");
    for c in audit.iter().flatten() {
        column(relid, c, &relation);
    }
    if !(1..=100_000).contains(&batch_size) {
        error::invalid_argument(format!("batch_size must be between 1 and 100000, got {batch_size}"), "The default is 1000.");
    }

    let fks = referencing_fks(relid);
    let children: Vec<Child> = match (dependents, &delete_from) {
        ("delete", Some(list)) => names(Some(list.clone()), "delete_from")
            .unwrap_or_default()
            .iter()
            .map(|spec| parse_child(spec, key_type_oid))
            .collect(),
        ("delete", None) => fks
            .iter()
            .filter(|(child_rel, _, _)| *child_rel != relid)
            .map(|(child_rel, col, _)| child(*child_rel, col, key_type_oid))
            .collect(),
        ("none" | "block", Some(_)) => error::invalid_argument(
            "delete_from goes with dependents => 'delete'".into(),
            "Either set dependents => 'delete' or leave delete_from out.",
        ),
        ("none" | "block", None) => Vec::new(),
        (other, _) => error::invalid_argument(
            format!("unknown dependents {}", sql::literal(other)),
            "dependents is 'none', 'block' (skip rows that children still reference) or 'delete' (delete children first).",
        ),
    };
    if nullify.is_none() && dependents != "block" {
        check_deletes_can_succeed(&fks, &relation, &children);
    }
    if let Some(f) = filter {
        check_filter(relid, &relation, f);
    }

    let exists = Spi::get_one_with_args::<bool>("SELECT EXISTS (SELECT 1 FROM lifecycle.policies WHERE name = $1)", &[name.into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or(false);
    if exists {
        error::raise(
            Code::ERRCODE_DUPLICATE_OBJECT,
            format!("policy {name} already exists"),
            None,
            Some("Drop it first with lifecycle.drop_policy(name), or choose another name."),
        );
    }
    let owner = role::current();
    let child_relids: Vec<pg_sys::Oid> = children.iter().map(|c| c.relid).collect();
    let child_columns: Vec<String> = children.iter().map(|c| c.column.clone()).collect();
    let args: Vec<DatumWithOid> = vec![
        name.into(),
        relid.into(),
        key_column.into(),
        key_type.into(),
        time_column.into(),
        time_col.type_name.into(),
        kind.into(),
        older_than.into(),
        filter.into(),
        (if nullify.is_some() { "nullify" } else { "delete" }).into(),
        nullify.into(),
        dependents.into(),
        child_relids.into(),
        child_columns.into(),
        audit.into(),
        batch_size.into(),
        enabled.into(),
        owner.into(),
    ];
    role::as_extension_owner(|| {
        Spi::get_one_with_args::<i32>(
            "WITH p AS (
                INSERT INTO lifecycle.policies (name, relation, key_column, key_type, time_column, time_type, time_kind,
                    older_than, filter, action, nullify_columns, dependents, child_relations, child_columns,
                    audit_columns, batch_size, enabled, owner)
                VALUES ($1, $2::oid::regclass, $3, $4, $5, $6, $7, $8, $9, $10, $11::name[], $12,
                        $13::oid[]::regclass[], $14::name[], $15::name[], $16, $17, $18::oid::regrole)
                RETURNING id)
             INSERT INTO lifecycle.policy_state (policy_id) SELECT id FROM p RETURNING policy_id",
            &args,
        )
    })
    .unwrap_or_else(|e| error::internal(e))
    .unwrap_or_else(|| error::internal("policy insert returned nothing"))
}
