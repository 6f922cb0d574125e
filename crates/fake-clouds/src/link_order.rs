//! Recording a plugin's link order: the functions a cache hit runs, so that
//! the linker can put them side by side (`plugins/<name>/link-order.txt`, read
//! by `plugins/build.rs` and given to lld as `--symbol-ordering-file`).
//!
//! A cache hit does little work, but that work calls into the standard
//! library, serde_json, sha2 and the core, whose functions the linker
//! otherwise scatters over a 5–7 MiB binary: each page the exec touches is a
//! page fault, with 64 KiB mapped around it. Packed together they take a few
//! pages. `scripts/link-order` records the list: it links each plugin as it
//! ships with a link map (`-Map`, mangled names), runs its cache hit under
//! callgrind against the fake clouds, and maps the addresses callgrind saw to
//! the map's symbols. Those names hold hashes of the compiler and of each
//! crate's build settings, so the file records the compiler it was made with,
//! and `build.rs` uses it only with that compiler: a stale list would only
//! leave functions where they are, but there is no point in passing it.

use std::collections::HashSet;

/// The symbols of a link map (lld's `-Map` output, with `--no-demangle`):
/// their addresses and names, sorted by address. Input-section and
/// output-section lines, which name files and sections, are left out.
pub fn map_symbols(map: &str) -> Vec<(u64, String)> {
    let mut symbols: Vec<(u64, String)> = map
        .lines()
        .filter_map(|line| {
            // VMA LMA Size Align Out/In/Symbol, the last indented by depth.
            let mut fields = line.split_whitespace();
            let vma = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _lma = fields.next()?;
            let _size = fields.next()?;
            let _align = fields.next()?;
            let name = fields.next()?;
            let symbol = fields.next().is_none()
                && !name.starts_with('.')
                && !name.contains(['/', '(', ':'])
                && (name.starts_with("_ZN") || name.starts_with("_R") || !name.contains('.'));
            symbol.then(|| (vma, name.to_string()))
        })
        .collect();
    symbols.sort();
    symbols
}

/// The addresses of the instructions callgrind saw run in `object`, in the
/// order they first appear in its output. The profile must be written with
/// `--dump-instr=yes`: cost lines then start with an instruction address,
/// absolute (`0x…`), relative to the previous one (`+n`, `-n`) or the same
/// (`*`); a stripped binary has no function names to go by.
pub fn executed_addresses(callgrind_out: &str, object: &str) -> Vec<u64> {
    let mut objects = std::collections::HashMap::new();
    let mut current = false;
    let mut last: u64 = 0;
    let mut seen = HashSet::new();
    let mut addresses = Vec::new();
    for line in callgrind_out.lines() {
        if let Some(rest) = line.strip_prefix("ob=").or_else(|| line.strip_prefix("cob=")) {
            // `(id) name` defines an id; `(id)` refers to one.
            let (id, name) = rest.split_once(' ').map_or((rest, None), |(id, name)| (id, Some(name)));
            if let Some(name) = name {
                objects.insert(id.to_string(), name.to_string());
            }
            if line.starts_with("ob=") {
                current = objects.get(id).is_some_and(|name| name == object);
            }
            continue;
        }
        let Some(position) = line.split_whitespace().next() else { continue };
        let address = if let Some(hex) = position.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).ok()
        } else if let Some(delta) = position.strip_prefix('+') {
            delta.parse::<u64>().ok().map(|d| last.wrapping_add(d))
        } else if let Some(delta) = position.strip_prefix('-') {
            delta.parse::<u64>().ok().map(|d| last.wrapping_sub(d))
        } else if position == "*" {
            Some(last)
        } else {
            None // `fn=`, `calls=`, `fl=`, headers: not a cost line.
        };
        let Some(address) = address else { continue };
        last = address;
        if current && seen.insert(address) {
            addresses.push(address);
        }
    }
    addresses
}

/// The symbols containing `addresses`, each once, in the order of the
/// addresses.
pub fn symbols_at(addresses: &[u64], symbols: &[(u64, String)]) -> Vec<String> {
    let mut seen = HashSet::new();
    addresses
        .iter()
        .filter_map(|&address| {
            let index = symbols.partition_point(|(start, _)| *start <= address).checked_sub(1)?;
            let name = &symbols[index].1;
            seen.insert(name.clone()).then(|| name.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "             VMA              LMA     Size Align Out     In      Symbol
          200000           200000    1000  4096 .rodata
          336f00           336f00   3ceafb    64 .text
          336f00           336f00      e89    16         /build/deps/gcr.gcr.3df0952c:(.text._ZN3std3sys4info17h0123456789abcdefE)
          336f00           336f00      e89     1                 _ZN3std3sys4info17h0123456789abcdefE
          337d90           337d90      209    16         /build/deps/gcr.gcr.3df0952c:(.text._RNvCs4X4t9plMPHF_4core3fmt5write)
          337d90           337d90      209     1                 _RNvCs4X4t9plMPHF_4core3fmt5write
          337fa0           337fa0       54    16         /usr/lib/x86_64-linux-gnu/crt1.o:(.text)
          337fa0           337fa0        0     1                 _start
";

    const CALLGRIND: &str = "version: 1
positions: instr line
events: Ir
ob=(1) /lib/ld-linux-x86-64.so.2
fn=(1) 0x0000000000001050
0x1050 0 3
ob=(2) /tmp/bin/gcr-credential-provider
fn=(2) 0x0000000000337d90
0x337d90 0 1
+4 0 1
cob=(1)
cfn=(1)
calls=1 0x1050 0
* * 5
fn=(3) 0x0000000000336f10
0x336f10 0 1
-16 0 2
ob=(1)
fn=(5) 0x0000000000337fa0
0x337fa0 0 1
";

    #[test]
    fn maps_what_callgrind_saw_run_to_the_symbols_of_the_link_map() {
        let symbols = map_symbols(MAP);
        assert_eq!(
            symbols.iter().map(|(_, name)| name.as_str()).collect::<Vec<_>>(),
            ["_ZN3std3sys4info17h0123456789abcdefE", "_RNvCs4X4t9plMPHF_4core3fmt5write", "_start"]
        );
        let addresses = executed_addresses(CALLGRIND, "/tmp/bin/gcr-credential-provider");
        assert_eq!(addresses, [0x337d90, 0x337d94, 0x336f10, 0x336f00], "only the binary's, each once");
        assert_eq!(
            symbols_at(&addresses, &symbols),
            ["_RNvCs4X4t9plMPHF_4core3fmt5write", "_ZN3std3sys4info17h0123456789abcdefE"]
        );
    }
}
