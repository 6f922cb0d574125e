//! The floor the benchmark compares warm execs with: the least a credential
//! plugin can do on a cache hit, in Rust, as one process (read the request on
//! stdin, read one small file, write one JSON line). Nothing else: no parsing,
//! no locking, no logging.

use std::io::{Read, Write};

fn main() {
    let mut request = Vec::new();
    let _ = std::io::stdin().lock().take(1024 * 1024).read_to_end(&mut request);
    let path = std::env::var_os("FLOOR_FILE").unwrap_or_default();
    let answer = std::fs::read(path).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&answer);
    let _ = stdout.write_all(b"\n");
}
