//! The plugins' shared build script (each plugin's Cargo.toml names it).
//!
//! Release binaries for Linux are linked as position-dependent executables,
//! as Go links the upstream plugins: a kubelet exec then starts without the
//! dynamic loader relocating ten thousand pointers, which took a third of a
//! warm exec's time and most of its page faults (see the README's
//! performance section). Libraries and ASLR of the stack, heap and shared
//! libraries are unchanged; debug builds stay position-independent.

fn main() {
    println!("cargo:rerun-if-changed=../build.rs");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if release && linux_gnu {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
