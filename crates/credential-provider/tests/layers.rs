//! The core's modules form layers: each uses only the modules that the list
//! in `lib.rs` names before it. This test reads the sources and holds them to
//! that order, so that no module comes to import one that imports it.

use std::path::Path;

/// The modules in the order `lib.rs` lists them (its ``[`name`]`` links).
fn listed_order(lib: &str) -> Vec<String> {
    let mut order = Vec::new();
    for line in lib.lines().filter(|l| l.starts_with("//! - ")) {
        let mut rest = line;
        while let Some(start) = rest.find("[`") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("`]") else { break };
            let name = after[..end].to_string();
            if !order.contains(&name) {
                order.push(name);
            }
            rest = &after[end..];
        }
    }
    order
}

/// What `lib.rs` re-exports at the crate root (`pub use error::Error;`,
/// `pub use provider::{Plan, Provider};`): each item and the module it is from.
fn root_reexports(lib: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    for line in lib.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
        let line = line.trim_end_matches(';');
        let Some((module, rest)) = line.split_once("::") else { continue };
        let names = rest.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            items.push((name.to_string(), module.to_string()));
        }
    }
    items
}

/// The leading identifier of `text`.
fn identifier(text: &str) -> String {
    text.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// The items a `{…}` group starting `text` names at its top level
/// (`{a, b::{c, d}, E}` names `a`, `b` and `E`).
fn group_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let (mut depth, mut item_start) = (0usize, 1usize);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                items.push(identifier(&text[item_start..i]));
                item_start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    items
}

/// The core modules a source file uses: `crate::<module>`, the modules of a
/// `use crate::{a, b::c}` group, and the module an item re-exported at the
/// root comes from (`crate::Error` uses `error`).
fn used_modules(source: &str, reexports: &[(String, String)]) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let names = if after.starts_with('{') { group_items(after) } else { vec![identifier(after)] };
        for name in names {
            let module = match reexports.iter().find(|(item, _)| *item == name) {
                Some((_, module)) => module.clone(),
                None => name,
            };
            if !module.is_empty() && !used.contains(&module) {
                used.push(module);
            }
        }
        rest = after;
    }
    used
}

#[test]
fn the_reader_sees_groups_and_root_reexports() {
    let reexports = vec![("Error".to_string(), "error".to_string())];
    let source = "use crate::{cache::{self, Cache}, http::Http, Error};\nfn f() { crate::secret::scrub(\"\"); }";
    assert_eq!(used_modules(source, &reexports), ["cache", "http", "error", "secret"]);
    let lib = "pub use error::Error;\npub use provider::{KeyInputs, Plan};\n";
    assert_eq!(
        root_reexports(lib),
        [("Error", "error"), ("KeyInputs", "provider"), ("Plan", "provider")]
            .map(|(item, module)| (item.to_string(), module.to_string()))
    );
}

#[test]
fn every_module_uses_only_modules_listed_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let order = listed_order(&lib);
    let reexports = root_reexports(&lib);
    let mut modules: Vec<String> = std::fs::read_dir(&src)
        .expect("src")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .filter(|name| name != "lib")
        .collect();
    modules.sort();
    for module in &modules {
        let position = order.iter().position(|m| m == module);
        let position = position.unwrap_or_else(|| panic!("{module} is not in lib.rs's list of modules"));
        let source = std::fs::read_to_string(src.join(format!("{module}.rs"))).expect("module source");
        for used in used_modules(&source, &reexports) {
            let Some(used_position) = order.iter().position(|m| *m == used) else {
                panic!("{module} uses crate::{used}, which is neither a listed module nor re-exported at the root");
            };
            assert!(
                used_position < position || used == *module,
                "{module} uses {used}, which lib.rs lists after it: move one of them, or reorder the list"
            );
        }
    }
    assert_eq!(order.len(), modules.len(), "lib.rs lists {order:?}; the modules are {modules:?}");
}
