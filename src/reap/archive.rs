//! Archives: a policy's deleted rows copied, in the batch's statement, into a table of the
//! user's (docs/compliance.md). What is archived is what the archive table has columns for:
//! the table is the list of columns the policy may read, so a secret column left out of it
//! (lifecycle.create_archive's `exclude`) is never read.

use super::policy::{kind_and_name, resolve_table, KeyColumn};
use crate::error::{self, Code};
use crate::sql;
use pgrx::prelude::*;

/// The archive table's own columns: which policy archived a row, and when.
pub const POLICY_COLUMN: &str = "lifecycle_policy";
pub const TIME_COLUMN: &str = "lifecycle_archived_at";

/// One column of the archive and, when the source has one of that name, the source's type.
struct Pair {
    name: String,
    archive_type: String,
    source_type: Option<String>,
}

/// Resolves and checks archive table `spec` (in `search_path`) for a policy on `relid`:
/// returns its OID and the source columns it archives, in the archive's column order.
pub fn check(spec: &str, search_path: &str, relid: pg_sys::Oid, relation: &str, key: &[KeyColumn]) -> (pg_sys::Oid, Vec<String>) {
    let archive = resolve_table(spec, search_path)
        .unwrap_or_else(|| error::invalid_argument(format!("invalid archive {}", sql::literal(spec)), "Name a table: 'schema.table'."));
    let (kind, name) = kind_and_name(archive);
    if !matches!(kind.as_str(), "r" | "p") || archive == relid {
        error::invalid_argument(
            format!("archive {name} is not a table apart from {relation}"),
            "Create one with lifecycle.create_archive(relation, 'schema.table', exclude => '{secret_column}').",
        );
    }
    let pairs = Spi::connect(|client| {
        client
            .select(
                "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
                        (SELECT pg_catalog.format_type(s.atttypid, s.atttypmod) FROM pg_catalog.pg_attribute s
                          WHERE s.attrelid = $2 AND s.attname = a.attname AND s.attnum > 0 AND NOT s.attisdropped)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                None,
                &[archive.into(), relid.into()],
            )?
            .map(|row| {
                Ok(Pair { name: row.get(1)?.unwrap_or_default(), archive_type: row.get(2)?.unwrap_or_default(), source_type: row.get(3)? })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e));
    let hint = "An archive has columns of the policy table (same names and types) and lifecycle_policy text, lifecycle_archived_at timestamptz; lifecycle.create_archive makes one.";
    for (own, type_name) in [(POLICY_COLUMN, "text"), (TIME_COLUMN, "timestamp with time zone")] {
        match pairs.iter().find(|p| p.name == own) {
            None => error::raise(Code::ERRCODE_UNDEFINED_COLUMN, format!("archive {name} has no column {own}"), None, Some(hint)),
            Some(p) if p.archive_type != type_name => error::raise(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!("column {own} of archive {name} is {}, not {type_name}", p.archive_type),
                None,
                Some(hint),
            ),
            Some(_) => {}
        }
    }
    let mut columns = Vec::new();
    for p in pairs.iter().filter(|p| p.name != POLICY_COLUMN && p.name != TIME_COLUMN) {
        match &p.source_type {
            None => error::raise(
                Code::ERRCODE_UNDEFINED_COLUMN,
                format!("column {} of archive {name} does not exist in {relation}", sql::literal(&p.name)),
                None,
                Some(hint),
            ),
            Some(t) if *t != p.archive_type => error::raise(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!("column {} is {t} in {relation} but {} in archive {name}", sql::literal(&p.name), p.archive_type),
                None,
                Some(hint),
            ),
            Some(_) => columns.push(p.name.clone()),
        }
    }
    if let Some(k) = key.iter().find(|k| !columns.contains(&k.name)) {
        error::raise(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!("archive {name} lacks key column {}", sql::literal(&k.name)),
            None,
            Some("The archive identifies each row by the policy table's primary key."),
        );
    }
    let may_insert = Spi::get_one_with_args::<bool>("SELECT pg_catalog.has_table_privilege($1, 'INSERT')", &[archive.into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or(false);
    if !may_insert {
        error::raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for archive {name}"),
            None,
            Some("The policy's owner needs INSERT on its archive."),
        );
    }
    (archive, columns)
}
