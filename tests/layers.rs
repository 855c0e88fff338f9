#![cfg(not(feature = "pg_test"))]
//! The module graph only points down: `lib.rs` wires the capabilities, capabilities use core
//! modules, core modules use only each other. A capability never reaches into another.
use std::path::Path;

const CORE: &[&str] = &["citus", "error", "limits", "role", "sql", "shmem", "time"];
const CAPABILITIES: &[&str] = &["activity", "expiry", "reap", "links", "schedule", "check"];

/// The top-level module a file under src/ belongs to (`src/reap/batch.rs` -> `reap`).
fn module_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_module_graph_only_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for path in &all {
        let module = module_of(path, &src);
        if module == "lib" {
            continue;
        }
        assert!(CORE.contains(&module.as_str()) || CAPABILITIES.contains(&module.as_str()), "{module}: add it to CORE or CAPABILITIES");
        let text = std::fs::read_to_string(path).unwrap();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + 7..];
            // `crate::x::...` or `crate::{x, y::z}`.
            let group = rest.strip_prefix('{').map(|g| g.split('}').next().unwrap_or_default()).unwrap_or(rest);
            let names = if rest.starts_with('{') { group.split(',').collect::<Vec<_>>() } else { vec![rest] };
            for name in names {
                let used: String = name.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !used.is_empty() && used != module && !CORE.contains(&used.as_str()) {
                    wrong.push(format!("{} uses crate::{used}", path.strip_prefix(&src).unwrap().display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "arrows that do not point down:\n{}", wrong.join("\n"));
}
