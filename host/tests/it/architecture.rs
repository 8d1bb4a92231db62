//! The shape of the code, kept: no import cycles between host/src's
//! top-level modules (each `crate::<module>` path in a module's files is an
//! edge; comments are ignored).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            rust_files(&entry.expect("entry").path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// Module name -> the top-level modules its files name as `crate::X`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("src")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let name = name.strip_suffix(".rs").unwrap_or(&name).to_owned();
            (name != "lib" && name != "main").then_some(name)
        })
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        rust_files(&src.join(format!("{module}.rs")), &mut files);
        let mut uses = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for (i, _) in code.match_indices("crate::") {
                    let name: String = code[i + 7..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if &name != module && modules.contains(&name) {
                        uses.insert(name);
                    }
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = imports();
    for (module, uses) in &graph {
        // Depth-first from each module: reaching it again is a cycle.
        let mut stack: Vec<(&String, Vec<&String>)> =
            uses.iter().map(|u| (u, vec![module])).collect();
        let mut seen = BTreeSet::new();
        while let Some((next, path)) = stack.pop() {
            assert!(
                next != module,
                "import cycle: {} -> {module}",
                path.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
            if !seen.insert(next) {
                continue;
            }
            let mut path = path.clone();
            path.push(next);
            for u in &graph[next] {
                stack.push((u, path.clone()));
            }
        }
    }
    // The gateway is built from the parts; no part reaches back for it.
    for part in [
        "versions", "semantic", "cache", "state", "plugin", "policy", "config",
    ] {
        assert!(
            !graph[part].contains("gateway"),
            "{part} imports the gateway"
        );
    }
}
