//! The plugins' shared build script (each plugin's Cargo.toml names it).
//!
//! Release binaries for Linux are linked as position-dependent executables,
//! as Go links the upstream plugins: a kubelet exec then starts without the
//! dynamic loader relocating ten thousand pointers, which took a third of a
//! warm exec's time and most of its page faults (see the README's
//! performance section). Libraries and ASLR of the stack, heap and shared
//! libraries are unchanged; debug builds stay position-independent.
//!
//! A plugin's `link-order.txt` (recorded by `scripts/link-order`, see
//! `fake_clouds::link_order`) lists the functions its cache hit runs; lld
//! puts them side by side, so that an exec touches a few pages of code
//! rather than pages all over the binary. It names functions by their
//! mangled names, which change with the compiler, so it is used only with the
//! compiler it was recorded with (whose default linker on x86_64 Linux is
//! lld), and never when the build chooses its own linker. `KCP_LINK_ORDER=off`
//! turns it off. A list that no longer matches the code is harmless: lld
//! leaves the functions it does not find where they were.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=../build.rs");
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=KCP_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=KCP_LINK_MAP");
    let release = env("PROFILE").is_some_and(|p| p == "release");
    let linux_gnu = env("CARGO_CFG_TARGET_OS").is_some_and(|os| os == "linux")
        && env("CARGO_CFG_TARGET_ENV").is_some_and(|env| env == "gnu");
    if !(release && linux_gnu) {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-no-pie");
    if let Some(map) = env("KCP_LINK_MAP") {
        // For scripts/link-order: the link map, with mangled names.
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-demangle");
    }
    if let Some(order) = link_order() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// This plugin's link order, when it applies to this build.
fn link_order() -> Option<PathBuf> {
    if env("KCP_LINK_ORDER").is_some_and(|v| v == "off")
        || env("CARGO_CFG_TARGET_ARCH").is_none_or(|arch| arch != "x86_64")
        || env("CARGO_ENCODED_RUSTFLAGS").is_some_and(|flags| flags.contains("link"))
        || std::env::vars().any(|(name, _)| name.starts_with("CARGO_TARGET_") && name.ends_with("_LINKER"))
    {
        return None;
    }
    let path = Path::new(&env("CARGO_MANIFEST_DIR")?).join("link-order.txt");
    let recorded_with = std::fs::read_to_string(&path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("# rustc ").map(|version| format!("rustc {version}")))?;
    let rustc = Command::new(env("RUSTC").unwrap_or_else(|| "rustc".into())).arg("-V").output().ok()?;
    (String::from_utf8_lossy(&rustc.stdout).trim() == recorded_with).then_some(path)
}
