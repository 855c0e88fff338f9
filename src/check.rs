//! Integrity checks over what pg_lifecycle manages (sql/check.sql): policies, links, and the
//! foreign keys around them; strict (raise) or lenient (warn and list).

pgrx::extension_sql_file!("../sql/check.sql", name = "check", requires = ["links", "reap", "activity"]);
