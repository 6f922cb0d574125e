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

/// The core modules a source file names as `crate::<module>`.
fn used_modules(source: &str) -> Vec<String> {
    let mut used = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        if !name.is_empty() && !used.contains(&name) {
            used.push(name);
        }
        rest = after;
    }
    used
}

#[test]
fn every_module_uses_only_modules_listed_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let order = listed_order(&lib);
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
        for used in used_modules(&source) {
            let Some(used_position) = order.iter().position(|m| *m == used) else {
                continue; // an item re-exported at the root, not a module
            };
            assert!(
                used_position < position || used == *module,
                "{module} uses {used}, which lib.rs lists after it: move one of them, or reorder the list"
            );
        }
    }
    assert_eq!(order.len(), modules.len(), "lib.rs lists {order:?}; the modules are {modules:?}");
}
