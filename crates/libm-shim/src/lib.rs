//! `pow`, linked into the binary from the `libm` crate (the Rust port of
//! musl's libm, which the Rust toolchain itself uses where a target has no
//! libm), so that the dynamic loader does not map, relocate and resolve the
//! system's libm.so at every exec for one function.
//!
//! Why: the AWS SDK's adaptive retry mode takes a cube root with `f64::powf`,
//! which compiles to a call to C's `pow`; nothing else in the ECR plugin
//! needs libm. Loading it was nine page faults and 0.06 ms of a 0.95 ms cache
//! hit, the difference between that plugin and the others (see the README's
//! performance section). A plugin that links this crate must name it
//! (`extern crate libm_shim;`), since nothing calls it from Rust.
//!
//! The one `unsafe` of the workspace: `#[no_mangle]` is unsafe because two
//! definitions of one C symbol would clash. Here the definition is the C
//! standard's own signature and meaning, and the binary holds no other.

/// C's `double pow(double x, double y)`.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    #[test]
    fn agrees_with_the_standard_library() {
        for (x, y) in [(2.0, 10.0), (27.0, 1.0 / 3.0), (0.5, -3.0), (10.0, 0.0), (1.5, 2.5)] {
            let ours = super::pow(x, y);
            let std = f64::powf(x, y);
            assert!((ours - std).abs() <= f64::EPSILON * std.abs(), "pow({x}, {y}): {ours} vs {std}");
        }
    }
}
