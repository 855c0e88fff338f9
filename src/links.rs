//! Links and safe migrations: trigger-maintained link columns, a batched resumable backfill,
//! and the two-step FK action change. All SQL (sql/links.sql): the work is DDL, triggers and
//! set-based UPDATEs, which read best where a DBA reads them.

pgrx::extension_sql_file!("../sql/links.sql", name = "links", requires = ["reap"]);
