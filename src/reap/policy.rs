//! Policies: validate add_policy's options against the catalogs and store the definition.
//!
//! Everything a batch needs is checked here once, as the registering role, so that a bad
//! table, column, type, option or filter is a clear error at registration instead of a
//! failing job at 3 a.m.

use super::archive;
use super::batch::Policy;
use super::computed;
use super::filter::{check_filter, Reach};
use super::keep;
use super::kinds::{Dependents, TimeKind};
use super::lifespan;
use super::shards;
use crate::error::{self, Code};
use crate::role;
use crate::sql;
use pgrx::datum::DatumWithOid;
use pgrx::datum::Interval;
use pgrx::prelude::*;

/// A policy's events are announced on NOTIFY channel `lifecycle_<policy name>`.
pub const EVENT_CHANNEL_PREFIX: &str = "lifecycle_";

/// A column of the policy's table as the catalogs describe it.
struct Column {
    type_oid: pg_sys::Oid,
    type_name: String,
    not_null: bool,
}

/// A column of the policy's table, or 42703 (lifecycle._column, sql/core.sql, says how).
fn column(relid: pg_sys::Oid, name: &str) -> Column {
    sql::optional_row("SELECT * FROM lifecycle._column($1, $2)", &[relid.into(), name.into()], |row| {
        Ok(Column {
            type_oid: row.get(1)?.unwrap_or_default(),
            type_name: row.get(2)?.unwrap_or_default(),
            not_null: row.get(3)?.unwrap_or(false),
        })
    })
    .unwrap_or_else(|| error::internal("lifecycle._column returned nothing"))
}

/// `name` must be a plain name (lifecycle._require_plain_name, sql/core.sql).
fn check_policy_name(name: &str) {
    Spi::run_with_args("SELECT lifecycle._require_plain_name($1, 'policy name')", &[name.into()]).unwrap_or_else(|e| error::internal(e));
}

/// The table's quoted, schema-qualified name after checking it is a table the caller owns;
/// `purpose` ends the refusal's message ("must be owner of table t to ...").
pub(super) fn check_relation(relid: pg_sys::Oid, purpose: &str) -> String {
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
    if !role::owns_table(role::current(), relid) {
        error::raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of table {qualified} to {purpose}"),
            None,
            Some("Policies act, and holds are placed, with the rights of the table's owner: do it as that role."),
        );
    }
    qualified
}

/// A column of the primary key: name, type as SQL text, type OID.
pub(super) struct KeyColumn {
    pub name: String,
    pub type_name: String,
}

/// The primary key's columns in index order: the batch's keyset tiebreak and row identity.
pub(super) fn primary_key(relid: pg_sys::Oid, relation: &str) -> Vec<KeyColumn> {
    let key = Spi::connect(|client| {
        client
            .select(
                "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL)
                   FROM pg_catalog.pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = $1 AND i.indisprimary
                  ORDER BY k.ord",
                None,
                &[relid.into()],
            )?
            .map(|row| Ok(KeyColumn { name: row.get(1)?.unwrap_or_default(), type_name: row.get(2)?.unwrap_or_default() }))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e));
    if key.is_empty() {
        error::raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{relation} has no primary key"),
            None,
            Some("Batches identify rows by the primary key (one column or several); add one."),
        );
    }
    key
}

/// The time kind: as given (checked against the column type) or inferred from it.
fn time_kind(given: Option<&str>, col: &Column, column_name: &str) -> TimeKind {
    let family = match col.type_name.as_str() {
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "bigint" | "integer" | "smallint" | "numeric" => "number",
        "uuid" | "text" | "character varying" | "character" => "ulid",
        _ => "other",
    };
    let kind = match given {
        None => match family {
            "timestamptz" => TimeKind::Timestamptz,
            "timestamp" => TimeKind::Timestamp,
            _ => error::invalid_argument(
                format!("cannot infer the time kind of column {} ({})", sql::literal(column_name), col.type_name),
                "Say time_kind => 'unix_ms' or 'unix_s' for numbers, 'ulid' for ULIDs stored as uuid or text.",
            ),
        },
        Some(k) => TimeKind::parse(k).unwrap_or_else(|| {
            error::invalid_argument(format!("unknown time_kind {}", sql::literal(k)), &format!("time_kind is one of {}.", TimeKind::list()))
        }),
    };
    let fits = match kind {
        TimeKind::UnixMs | TimeKind::UnixS => family == "number",
        other => family == other.as_str(),
    };
    if !fits {
        error::raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("time_kind {} does not fit column {} of type {}", kind.as_str(), sql::literal(column_name), col.type_name),
            None,
            Some("timestamptz/timestamp need those types, unix_ms/unix_s an integer column, ulid a uuid or text column."),
        );
    }
    kind
}

/// A policy's time zone: only for `timestamp` columns (the other kinds are absolute), and one
/// that `AT TIME ZONE` knows (a name, an abbreviation or a POSIX offset).
fn check_time_zone(zone: &str, kind: TimeKind, time_column: &str) {
    if kind != TimeKind::Timestamp {
        error::invalid_argument(
            format!("time_zone applies to timestamp columns; {} is {}", sql::literal(time_column), kind.as_str()),
            "Leave time_zone out: the other time kinds are absolute times.",
        );
    }
    let known = sql::in_subtransaction(|| Spi::run_with_args("SELECT now() AT TIME ZONE $1", &[zone.into()]));
    if !matches!(known, Ok(Ok(()))) {
        error::invalid_argument(
            format!("unknown time zone {}", sql::literal(zone)),
            "Name the zone the column's wall-clock times are in, e.g. 'UTC' or 'Europe/Berlin' (pg_timezone_names lists them).",
        );
    }
}

/// set_to's entries `column = value`, checked: each column once, of the table, neither a key
/// nor a generated column; each value an expression of the column's type that reads no other
/// rows and calls nothing volatile (the planner checks the assignment as the batch's UPDATE
/// will run it). A constant value guards the row: it is due only while it does not hold it,
/// and at least one value must be a constant, or a row would be updated again every sweep.
/// Returns `[[column, value, guard], ...]` as lifecycle.policies.set_to stores it.
fn assignments(relid: pg_sys::Oid, relation: &str, key: &[KeyColumn], entries: Vec<String>) -> Vec<serde_json::Value> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in child_specs(entries) {
        let (name, value) = split_assignment(&entry);
        if out.iter().any(|(c, _)| *c == name) {
            error::invalid_argument(format!("set_to sets column {} twice", sql::literal(&name)), "Set each column once.");
        }
        column(relid, &name);
        let generated = Spi::get_one_with_args::<bool>(
            "SELECT a.attgenerated <> '' OR a.attidentity = 'a' FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attname = $2",
            &[relid.into(), name.as_str().into()],
        )
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or(false);
        if generated || key.iter().any(|k| k.name == name) {
            error::invalid_argument(
                format!("column {} cannot be set", sql::literal(&name)),
                "set_to sets columns that are neither part of the primary key nor generated.",
            );
        }
        out.push((name, value));
    }
    let sets: Vec<String> = out.iter().map(|(c, v)| format!("{} = ({v})", sql::ident(c))).collect();
    // Planned, not run: types, the owner's UPDATE right and names, as the batch's statement has them.
    Spi::connect_mut(|client| {
        client.update(&format!("EXPLAIN UPDATE {relation} t SET {} WHERE false", sets.join(", ")), None, &[]).map(|_| ())
    })
    .unwrap_or_else(|e| error::internal(e));
    let mut any_guard = false;
    let stored = out
        .into_iter()
        .map(|(column, value)| {
            let (reads, volatile, constant) = value_kind(relation, &value);
            if reads || volatile {
                error::invalid_argument(
                    format!(
                        "set_to value {} of column {} reads other rows or calls a volatile function",
                        sql::literal(&value),
                        sql::literal(&column)
                    ),
                    "A value is a constant or an expression over the row and now(), e.g. 'true', 'now()', 'attempts + 1'.",
                );
            }
            any_guard |= constant;
            serde_json::json!([column, format!("({value})"), constant])
        })
        .collect();
    if !any_guard {
        error::invalid_argument(
            "set_to sets no column to a constant, so a row set once would be due again every sweep".into(),
            "Set at least one column to a constant (revoked = true, status = 'expired'); a row is due while it does not hold it.",
        );
    }
    stored
}

/// `column = value` at the first `=` outside a quoted column name: (column, value).
fn split_assignment(entry: &str) -> (String, String) {
    let bad = || -> ! {
        error::invalid_argument(
            format!("invalid set_to entry {}", sql::literal(entry)),
            "Write each entry as 'column = value', e.g. '{revoked = true, updated_at = now()}'.",
        )
    };
    let mut quoted = false;
    let eq = entry
        .char_indices()
        .find(|(_, c)| {
            quoted ^= *c == '"';
            *c == '=' && !quoted
        })
        .map_or_else(|| bad(), |(i, _)| i);
    let (name, value) = (entry[..eq].trim(), entry[eq + 1..].trim());
    let name =
        name.strip_prefix('"').and_then(|n| n.strip_suffix('"')).map(|n| n.replace("\"\"", "\"")).unwrap_or_else(|| name.to_string());
    if name.is_empty() || value.is_empty() {
        bad();
    }
    (name, value.to_string())
}

/// Of a set_to value over the row `t` of `relation`: (reads other rows, volatile, a constant:
/// no column of the row and nothing that can change within a statement).
fn value_kind(relation: &str, value: &str) -> (bool, bool, bool) {
    // An unknown column raises 42703 here.
    let Some(query) = sql::analyzed(&format!("SELECT ({value}) FROM {relation} t")) else {
        error::invalid_argument(format!("set_to value {} is not one expression", sql::literal(value)), "E.g. 'true', 'now()'.")
    };
    // SAFETY: the analyzed tree of one statement; the walkers only read it.
    unsafe {
        let target = (*query).targetList.cast::<pg_sys::Node>();
        let constant = !pg_sys::contain_mutable_functions(target) && !pg_sys::contain_vars_of_level(target, 0);
        ((*query).hasSubLinks, pg_sys::contain_volatile_functions(query.cast()), constant)
    }
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

/// A child the policy names: `relation(columns)` matching `parent_columns` of the policy's
/// table, pairwise: the columns its foreign key references, those the entry names after
/// REFERENCES, or else the primary key.
struct Child {
    relid: pg_sys::Oid,
    columns: Vec<String>,
    parent_columns: Vec<String>,
    handling: &'static str,
}

/// A delete_from / block_on entry as written: `table(columns)`, optionally followed by
/// `REFERENCES (parent columns)` for a child without a foreign key.
struct Entry {
    relid: pg_sys::Oid,
    columns: Vec<String>,
    references: Option<Vec<String>>,
}

/// A comma-separated list of column names, each plain or double-quoted; None if one is empty.
fn column_list(list: &str) -> Option<Vec<String>> {
    let columns: Vec<String> = list
        .split(',')
        .map(|c| {
            let c = c.trim();
            c.strip_prefix('"').and_then(|c| c.strip_suffix('"')).map(|c| c.replace("\"\"", "\"")).unwrap_or_else(|| c.to_string())
        })
        .collect();
    (!columns.iter().any(|c| c.is_empty())).then_some(columns)
}

/// Byte offsets of the first parenthesis outside double quotes and of the one closing it.
fn parenthesized(text: &str) -> Option<(usize, usize)> {
    let (mut quoted, mut open) = (false, None);
    for (i, ch) in text.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '(' if !quoted && open.is_none() => open = Some(i),
            ')' if !quoted => return open.map(|o| (o, i)),
            _ => {}
        }
    }
    None
}

/// Parses `table(column, ...) [REFERENCES (column, ...)]`; the table resolves in
/// `search_path` (the caller's), as a regclass argument does. `option` names the option for
/// messages.
fn parse_child(spec: &str, option: &str, search_path: &str) -> Entry {
    let bad = || -> ! {
        error::invalid_argument(
            format!("invalid {option} entry {}", sql::literal(spec)),
            "Write each entry as 'table(column)' or 'schema.table(column1, column2)', the columns in the order of the policy table's primary key; \
             a child without a foreign key to another unique key adds its columns: 'table(column) REFERENCES (parent_column)'.",
        )
    };
    let (open, close) = parenthesized(spec).unwrap_or_else(|| bad());
    let relation = spec[..open].trim();
    let columns = column_list(&spec[open + 1..close]).unwrap_or_else(|| bad());
    let rest = spec[close + 1..].trim();
    let references = if rest.is_empty() {
        None
    } else {
        let keyword = rest.get(..10).filter(|k| k.eq_ignore_ascii_case("references")).unwrap_or_else(|| bad());
        let list = rest[keyword.len()..].trim();
        let inner = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')).unwrap_or_else(|| bad());
        Some(column_list(inner).unwrap_or_else(|| bad()))
    };
    if relation.is_empty() {
        bad();
    }
    let relid = resolve_table(relation, search_path).unwrap_or_else(|| bad());
    Entry { relid, columns, references }
}

/// A table named in an option, resolved in `search_path` (the caller's) as a regclass argument
/// is: regclass input does the quoting rules and raises 42P01 for an unknown table.
pub(super) fn resolve_table(name: &str, search_path: &str) -> Option<pg_sys::Oid> {
    sql::with_settings(&[(c"search_path", search_path)], || {
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::text::regclass::oid", &[name.into()])
    })
    .unwrap_or_else(|e| error::internal(e))
}

/// The relation's kind (`r`, `p`, `v`, ...) and its name as regclass prints it.
pub(super) fn kind_and_name(relid: pg_sys::Oid) -> (String, String) {
    sql::optional_row("SELECT c.relkind::text, $1::regclass::text FROM pg_catalog.pg_class c WHERE c.oid = $1", &[relid.into()], |row| {
        Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()))
    })
    .unwrap_or_default()
}

/// The foreign keys from `child` (on exactly `columns`, in any order) to `parent`: each one's
/// name and the parent columns it references, paired with `columns` in the order given.
const FOREIGN_KEYS_ON: &str = "
SELECT f.conname::text,
       ARRAY(SELECT pa.attname::text
               FROM unnest($3::text[]) WITH ORDINALITY AS n(col, i)
               JOIN unnest(f.conkey, f.confkey) AS m(child_att, parent_att) ON true
               JOIN pg_catalog.pg_attribute ca ON ca.attrelid = f.conrelid AND ca.attnum = m.child_att AND ca.attname::text = n.col
               JOIN pg_catalog.pg_attribute pa ON pa.attrelid = f.confrelid AND pa.attnum = m.parent_att
              ORDER BY n.i)
  FROM pg_catalog.pg_constraint f
 WHERE f.contype = 'f' AND f.conrelid = $1 AND f.confrelid = $2
   AND cardinality(f.conkey) = cardinality($3::text[])
   AND NOT EXISTS (SELECT 1 FROM unnest(f.conkey) k JOIN pg_catalog.pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k
                    WHERE a.attname::text <> ALL ($3::text[]))
 ORDER BY f.oid";

/// Whether a valid unique index (or constraint) without predicate or expressions has exactly
/// `columns` as its key, in any order: only then does a value name one parent row.
const IS_UNIQUE_KEY: &str = "
SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_index i
   WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
     AND i.indnkeyatts = cardinality($2::text[])
     AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey[0:i.indnkeyatts - 1]) k
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k
                      WHERE a.attname::text <> ALL ($2::text[])))";

/// The parent columns a named child matches, pairwise with its columns. A foreign key on the
/// child's columns decides (0.3.0 compared them with the primary key whatever the key
/// referenced: a block_on entry on a child of a unique column blocked nothing, and its
/// cascade took the live children); an entry that says otherwise is refused. Without one,
/// the columns after REFERENCES, or the primary key, which must be a unique key.
fn parent_columns(entry: &Entry, child_name: &str, policy_relid: pg_sys::Oid, key: &[KeyColumn]) -> Vec<String> {
    let spec = format!("{child_name}({})", entry.columns.join(", "));
    let foreign_keys: Vec<(String, Vec<String>)> = Spi::connect(|client| {
        client
            .select(FOREIGN_KEYS_ON, None, &[entry.relid.into(), policy_relid.into(), entry.columns.clone().into()])?
            .map(|row| Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<Vec<String>>(2)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e));
    let contradicts = |detail: String, hint: &str| -> ! { error::raise(Code::ERRCODE_INVALID_FOREIGN_KEY, detail, None, Some(hint)) };
    if let Some((fk, referenced)) = foreign_keys.first() {
        return match &entry.references {
            Some(named) => match foreign_keys.iter().find(|(_, r)| r == named) {
                Some((_, r)) => r.clone(),
                None => contradicts(
                    format!(
                        "{spec} REFERENCES ({}) contradicts foreign key {fk}, which references ({})",
                        named.join(", "),
                        referenced.join(", ")
                    ),
                    "Leave REFERENCES out: the foreign key says which parent columns the child matches.",
                ),
            },
            None if foreign_keys.iter().any(|(_, r)| r != referenced) => contradicts(
                format!("{spec} has several foreign keys to the policy's table, on different parent columns"),
                "Say which with REFERENCES (parent columns).",
            ),
            None => referenced.clone(),
        };
    }
    let Some(named) = entry.references.clone() else { return key.iter().map(|k| k.name.clone()).collect() };
    if named.len() != entry.columns.len() {
        error::raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("{spec} names {} column(s) and REFERENCES {}", entry.columns.len(), named.len()),
            None,
            Some("Name one parent column per child column, in the same order."),
        );
    }
    for p in &named {
        column(policy_relid, p);
    }
    let unique = Spi::get_one_with_args::<bool>(IS_UNIQUE_KEY, &[policy_relid.into(), named.clone().into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or(false);
    if !unique {
        contradicts(
            format!("{spec} REFERENCES ({}), which is not a unique key of the policy's table", named.join(", ")),
            "Name the columns of its primary key or of a unique constraint or index (without predicate), as a foreign key would.",
        );
    }
    named
}

/// Checks a named child against the policy's table; `option` is delete_from or block_on.
fn child(entry: Entry, option: &str, policy_relid: pg_sys::Oid, key: &[KeyColumn]) -> Child {
    let (kind, name) = kind_and_name(entry.relid);
    if !matches!(kind.as_str(), "r" | "p") {
        error::invalid_argument(
            format!("{option} names {name}, which is not a table"),
            "Name the tables whose rows reference the policy's rows.",
        );
    }
    let parent_columns = parent_columns(&entry, &name, policy_relid, key);
    if entry.relid == policy_relid && entry.columns == parent_columns {
        error::invalid_argument(
            format!("{option} names the key of {name} itself, not a child"),
            "Name the tables whose rows reference the policy's rows, with their referencing columns.",
        );
    }
    if entry.columns.len() != parent_columns.len() {
        error::raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "{option} entry {name}({}) has {} column(s); the primary key has {}",
                entry.columns.join(", "),
                entry.columns.len(),
                key.len()
            ),
            None,
            Some("Name one child column per primary-key column, in the key's order, or add REFERENCES (parent columns)."),
        );
    }
    for (c, p) in entry.columns.iter().zip(&parent_columns) {
        let (child_col, parent_col) = (column(entry.relid, c), column(policy_relid, p));
        if child_col.type_oid != parent_col.type_oid {
            error::raise(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!("{name}.{c} ({}) cannot reference the policy table's column {p} ({})", child_col.type_name, parent_col.type_name),
                None,
                Some("A child column must have the type of the parent column it matches, pairwise in the order given."),
            );
        }
    }
    let handling = if option == "delete_from" { "delete" } else { "block" };
    let privileges = if handling == "delete" { "SELECT, DELETE" } else { "SELECT" };
    let allowed = Spi::get_one_with_args::<bool>("SELECT pg_catalog.has_table_privilege($1, $2)", &[entry.relid.into(), privileges.into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or(false);
    if !allowed {
        error::raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for {option} table {name}"),
            None,
            Some("The policy's owner needs SELECT on every child it names, and DELETE on those in delete_from."),
        );
    }
    Child { relid: entry.relid, columns: entry.columns, parent_columns, handling }
}

/// The entries of a delete_from / block_on / set_to array. An array literal splits at every
/// comma, so `'{t(a, b)}'` arrives as `t(a` and ` b)`: the elements are joined again and split
/// only at commas outside parentheses, double-quoted names and string literals.
fn child_specs(elements: Vec<String>) -> Vec<String> {
    if elements.is_empty() {
        return elements;
    }
    let joined = elements.join(",");
    let (mut specs, mut current, mut depth) = (Vec::new(), String::new(), 0i32);
    let (mut identifier, mut literal) = (false, false);
    for ch in joined.chars() {
        let quoted = identifier || literal;
        match ch {
            '"' if !literal => identifier = !identifier,
            '\'' if !identifier => literal = !literal,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                specs.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    specs.push(current.trim().to_string());
    specs
}

/// The children named by delete_from and block_on, checked; each (table, columns) once.
fn named_children(
    delete_from: Option<Vec<Option<String>>>,
    block_on: Option<Vec<Option<String>>>,
    search_path: &str,
    policy_relid: pg_sys::Oid,
    key: &[KeyColumn],
) -> Vec<Child> {
    let mut children: Vec<Child> = Vec::new();
    for (option, list) in [("delete_from", delete_from), ("block_on", block_on)] {
        for spec in child_specs(names(list, option).unwrap_or_default()) {
            let named = child(parse_child(&spec, option, search_path), option, policy_relid, key);
            if children.iter().any(|c| c.relid == named.relid && c.columns == named.columns) {
                error::invalid_argument(
                    format!("{option} entry {} names a child already named", sql::literal(&spec)),
                    "Name each child once, in delete_from or in block_on.",
                );
            }
            children.push(named);
        }
    }
    children
}

/// A delete would fail on children that neither the policy handles nor their foreign keys
/// (lifecycle._policy_children says 'fails'): refuse to register such a policy. Runs after
/// the policy is stored, inside add_policy's statement, so a refusal stores nothing.
fn check_deletes_can_succeed(policy_id: i32, relation: &str) {
    let failing = sql::optional_row(
        "SELECT k.relation::text || '(' || array_to_string(k.columns, ', ') || ')', k.on_delete
           FROM lifecycle._policy_children($1) k WHERE k.handling = 'fails' LIMIT 1",
        &[policy_id.into()],
        |row| Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default())),
    );
    if let Some((child, action)) = failing {
        error::raise(
            Code::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("{child} references {relation} with ON DELETE {action}: deleting a referenced row would fail"),
            None,
            Some("Use dependents => 'block' to keep referenced rows until their children are gone, dependents => 'delete' or delete_from to delete the children with them."),
        );
    }
}

fn required<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| error::null_argument(name, "See docs/reaping.md for add_policy's arguments."))
}

/// Validates and stores a policy; returns its id. Called by lifecycle.add_policy (sql/reap.sql),
/// which gives the SQL signature its named, defaulted arguments and passes the caller's
/// search_path, in which the tables named by delete_from and block_on resolve.
#[allow(clippy::too_many_arguments)]
#[pg_extern(schema = "lifecycle", name = "_add_policy")]
#[search_path(pg_catalog, pg_temp)]
fn store_policy(
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
    block_on: Option<Vec<Option<String>>>,
    target_batch_time: Option<Interval>,
    archive: Option<&str>,
    events: Option<bool>,
    event_columns: Option<Vec<Option<String>>>,
    time_zone: Option<&str>,
    set_to: Option<Vec<Option<String>>>,
    time_expression: Option<&str>,
    keep_newest: Option<i32>,
    keep_per: Option<Vec<Option<String>>>,
    lifespan: Option<&str>,
    lifespan_per: Option<Vec<Option<String>>>,
    search_path: Option<&str>,
) -> i32 {
    role::extension_owner(); // the tables have this library's shape
    let name = required(name, "name");
    check_policy_name(name);
    let relid = required(relation, "relation");
    let dependents = required(dependents, "dependents");
    let batch_size = crate::limits::require_batch(batch_size, "batch_size");
    let enabled = required(enabled, "enabled");
    let events = required(events, "events");
    let search_path = search_path.unwrap_or("");

    let relation = check_relation(relid, "register a policy on it");
    let key = primary_key(relid, &relation);
    let (time_col, time_label) = match (time_column, time_expression) {
        (Some(c), None) => (column(relid, c), c),
        (None, Some(e)) => {
            let (type_oid, type_name) = computed::check(&relation, e);
            (Column { type_oid, type_name, not_null: false }, e)
        }
        (None, None) => error::null_argument(
            "time_column",
            "Name the time column, or pass time_column => NULL with time_expression => '<expression over the row>'.",
        ),
        (Some(_), Some(_)) => error::invalid_argument(
            "time_column and time_expression both say what the time is".into(),
            "Pass time_column => NULL with a time_expression, or leave time_expression out.",
        ),
    };
    let kind = time_kind(time_kind_given, &time_col, time_label);
    if kind == TimeKind::Ulid && time_expression.is_some() {
        error::invalid_argument(
            "a ULID time is a key column, not a computed time".into(),
            "Name the ULID column as time_column, or compute a timestamp.",
        );
    }
    if let Some(zone) = time_zone {
        check_time_zone(zone, kind, time_label);
    }
    if kind == TimeKind::Ulid && older_than.is_none() && keep_newest.is_none() && lifespan.is_none() {
        error::invalid_argument(
            "a ULID time column records creation time, so it needs older_than, lifespan or keep_newest".into(),
            "E.g. older_than => '7 days'.",
        );
    }
    if older_than.as_ref().is_some_and(|i| i.as_micros() <= 0) {
        error::invalid_argument("older_than must be a positive interval".into(), "E.g. older_than => '30 days'.");
    }
    if target_batch_time.as_ref().is_some_and(|i| i.as_micros() <= 0) {
        error::invalid_argument(
            "target_batch_time must be a positive interval".into(),
            "E.g. target_batch_time => '50 milliseconds', or NULL for batches of a fixed batch_size.",
        );
    }
    let nullify = names(nullify, "nullify");
    for c in nullify.iter().flatten() {
        let col = column(relid, c);
        if col.not_null || key.iter().any(|k| k.name == *c) {
            error::invalid_argument(
                format!("column {} cannot be nullified", sql::literal(c)),
                "nullify names nullable columns that are not part of the primary key.",
            );
        }
    }
    if nullify.is_some() && set_to.is_some() {
        error::invalid_argument(
            "nullify and set_to both say what to set".into(),
            "Write the NULLs into set_to ('{col = NULL}'), or leave set_to out.",
        );
    }
    let set_to = names(set_to, "set_to").map(|entries| assignments(relid, &relation, &key, entries));
    let updates = nullify.is_some() || set_to.is_some();
    let audit = names(audit, "audit");
    for c in audit.iter().flatten() {
        column(relid, c);
    }
    let dependents = Dependents::parse(dependents).unwrap_or_else(|| {
        error::invalid_argument(
            format!("unknown dependents {}", sql::literal(dependents)),
            "dependents is 'none', 'block' (keep rows that children still reference) or 'delete' (delete children with them).",
        )
    });
    if updates && (dependents == Dependents::Delete || delete_from.is_some()) {
        error::invalid_argument(
            "a policy that updates rows deletes nothing, so it has no children to delete".into(),
            "Leave out delete_from and dependents => 'delete', or leave out nullify / set_to.",
        );
    }
    let children = named_children(delete_from, block_on, search_path, relid, &key);
    if archive.is_some() && updates {
        error::invalid_argument(
            "archive keeps deleted rows, and a policy that updates rows deletes none".into(),
            "Leave out archive, or leave out nullify / set_to.",
        );
    }
    let archive = archive.map(|spec| archive::check(spec, search_path, relid, &relation, &key));
    let event_columns = names(event_columns, "event_columns");
    for c in event_columns.iter().flatten() {
        column(relid, c);
    }
    if event_columns.is_some() && !events {
        error::invalid_argument("event_columns needs events => true".into(), "Add events => true, or leave out event_columns.");
    }
    if events && name.len() > 63 - EVENT_CHANNEL_PREFIX.len() {
        error::invalid_argument(
            format!("policy name {name} is too long for events"),
            "Its NOTIFY channel is lifecycle_<name>, at most 63 characters: shorten the name to 53.",
        );
    }
    let keep_per = names(keep_per, "keep_per");
    for c in keep_per.iter().flatten() {
        column(relid, c);
    }
    let keys: Vec<String> = key.iter().map(|k| k.name.clone()).collect();
    let lifespan_per = names(lifespan_per, "lifespan_per").map(|per| {
        per.into_iter()
            .map(|name| {
                let type_name = column(relid, &name).type_name;
                super::model::Column { name, type_name }
            })
            .collect::<Vec<_>>()
    });
    let lifespan =
        lifespan::check_options(relid, &relation, time_column, older_than.is_some(), keep_newest.is_some(), lifespan, lifespan_per);
    keep::check_options(relid, &relation, &keys, time_column, keep_newest, keep_per.as_deref());
    let filter_reads_related = filter.is_some_and(|f| check_filter(relid, &relation, f, Reach::RelatedRows));
    if filter_reads_related && crate::citus::distribution(relid).is_some() {
        error::raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("the filter of a policy on Citus table {relation} reads other tables"),
            Some("A Citus table's batches run shard by shard, where other tables are not at hand under their names.".into()),
            Some("Use a filter over the row's own columns on a Citus table."),
        );
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
    let key_columns: Vec<String> = key.iter().map(|k| k.name.clone()).collect();
    let key_types: Vec<String> = key.iter().map(|k| k.type_name.clone()).collect();
    let args: Vec<DatumWithOid> = vec![
        name.into(),
        relid.into(),
        key_columns.into(),
        key_types.into(),
        time_column.into(),
        time_col.type_name.into(),
        kind.as_str().into(),
        older_than.into(),
        filter.into(),
        (if nullify.is_some() {
            "nullify"
        } else if set_to.is_some() {
            "set"
        } else {
            "delete"
        })
        .into(),
        nullify.clone().into(),
        dependents.as_str().into(),
        audit.into(),
        batch_size.into(),
        enabled.into(),
        owner.into(),
        target_batch_time.into(),
        archive.as_ref().map(|a| a.0).into(),
        archive.map(|a| a.1).into(),
        events.into(),
        event_columns.into(),
        time_zone.into(),
        set_to.map(|a| pgrx::JsonB(serde_json::Value::Array(a))).into(),
        time_expression.into(),
        keep_newest.into(),
        keep_per.into(),
        lifespan.as_ref().map(|l| l.expression.clone()).into(),
        lifespan.map(|l| l.per.into_iter().map(|c| c.name).collect::<Vec<_>>()).filter(|per| !per.is_empty()).into(),
    ];
    let id = role::as_extension_owner(|| {
        let id = Spi::get_one_with_args::<i32>(
            "WITH p AS (
                INSERT INTO lifecycle.policies (name, relation, key_columns, key_types, time_column, time_type, time_kind,
                    older_than, filter, action, nullify_columns, dependents, audit_columns, batch_size, enabled, owner,
                    target_batch_time, archive, archive_columns, events, event_columns, time_zone, set_to,
                    time_expression, keep_newest, keep_per, lifespan, lifespan_per)
                VALUES ($1, $2::oid::regclass, $3::name[], $4, $5, $6, $7, $8, $9, $10, $11::name[], $12,
                        $13::name[], $14, $15, $16::oid::regrole, $17, $18::oid::regclass, $19::name[], $20, $21::name[], $22, $23,
                        $24, $25, $26::name[], $27, $28::name[])
                RETURNING id)
             INSERT INTO lifecycle.policy_state (policy_id) SELECT id FROM p RETURNING policy_id",
            &args,
        )?
        .unwrap_or_else(|| error::internal("policy insert returned nothing"));
        for (position, c) in children.iter().enumerate() {
            Spi::run_with_args(
                "INSERT INTO lifecycle.policy_children (policy_id, position, relation, columns, handling, parent_columns)
                 VALUES ($1, $2, $3::oid::regclass, $4::name[], $5, $6::name[])",
                &[
                    id.into(),
                    (position as i32 + 1).into(),
                    c.relid.into(),
                    c.columns.clone().into(),
                    c.handling.into(),
                    c.parent_columns.clone().into(),
                ],
            )?;
        }
        Ok::<_, pgrx::spi::Error>(id)
    })
    .unwrap_or_else(|e| error::internal(e));
    if !updates {
        check_deletes_can_succeed(id, &relation);
    }
    if let Some(table) = crate::citus::distribution(relid) {
        shards::check(&Policy::load(id), &table);
    } else {
        warn_without_time_index(id);
    }
    id
}

/// A WARNING, with the CREATE INDEX that would serve it, when a batch of the policy would
/// read its whole table: nothing is refused (the index may be built after, CONCURRENTLY).
fn warn_without_time_index(id: i32) {
    // Read-write: a statement of its own, with a snapshot that sees the policy just stored.
    let found = Spi::connect_mut(|client| {
        let row = sql::run_kept(
            client,
            true,
            "SELECT lifecycle._batch_reads_an_index(id), name, lifecycle._time_index_statement(relation, time_column, time_expression)
               FROM lifecycle.policies WHERE id = $1",
            &[id.into()],
            Some(1),
        )?
        .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<bool>(1)?,
            row.get::<String>(2)?.unwrap_or_default(),
            row.get::<String>(3)?.unwrap_or_default(),
        ))
    })
    .unwrap_or_else(|e| error::internal(e));
    if let (Some(false), name, statement) = found {
        error::warn(
            format!("a batch of policy {name} reads the whole table: no index serves its time"),
            &format!("{statement}; lifecycle.check() reports it until then."),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::child_specs;

    #[test]
    fn child_entries_survive_the_array_literal_splitting_them_at_commas() {
        let split = |parts: &[&str]| child_specs(parts.iter().map(|p| p.to_string()).collect());
        assert_eq!(split(&["kc.locks(realm", " sid)"]), ["kc.locks(realm, sid)"]);
        assert_eq!(split(&["a(x)", "b(y", "z)"]), ["a(x)", "b(y,z)"]);
        assert_eq!(split(&["\"odd,name\"(x)"]), ["\"odd,name\"(x)"]);
        assert_eq!(split(&["note = 'a", " b'", "n = 1"]), ["note = 'a, b'", "n = 1"]);
    }
}

/// The entry point of 0.1.0 and 0.2.0 (C symbol `add_policy_wrapper`). A released symbol never
/// disappears: an earlier version's SQL still points at it after a new package is installed,
/// until ALTER EXTENSION ... UPDATE. Its tables have an earlier shape then, so it only says so.
#[allow(clippy::too_many_arguments, unused_variables)]
#[pg_extern(sql = false)]
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
    role::extension_owner();
    error::internal("lifecycle._add_policy of an earlier version called with the current one installed")
}

/// The entry point of 0.3.0 (C symbol `register_policy_wrapper`), kept for the same reason as
/// `add_policy` above: 0.3.0's SQL calls it with one argument fewer until the update.
#[allow(clippy::too_many_arguments, unused_variables)]
#[pg_extern(sql = false)]
fn register_policy(
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
    block_on: Option<Vec<Option<String>>>,
    target_batch_time: Option<Interval>,
    archive: Option<&str>,
    events: Option<bool>,
    event_columns: Option<Vec<Option<String>>>,
    search_path: Option<&str>,
) -> i32 {
    role::extension_owner();
    error::internal("lifecycle._add_policy of 0.3.0 called with the current one installed")
}
