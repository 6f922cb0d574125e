//! Tests that run inside a private network and mount namespace (`unshare`),
//! where only loopback exists: a test may give loopback a cloud's metadata
//! address (169.254.169.254, EKS Pod Identity's fd00:ec2::23) and serve a
//! fake there, and nothing a plugin sends can leave the machine.

use std::process::Command;

/// Set in the copy of a test that runs inside the private namespaces.
const INSIDE_VARIABLE: &str = "FAKE_CLOUDS_NETNS_INSIDE";

/// What every such test needs: the programs and their Debian packages.
const PROGRAMS: &[(&str, &str)] = &[("unshare", "util-linux"), ("ip", "iproute2")];

/// Whether the calling test is running inside its private namespaces, with
/// loopback up. Outside them, it runs the test named `test_name` of this same
/// test binary again inside them, asserts that that copy ran and passed, and
/// returns `false`: the caller then has nothing more to do. `programs` are
/// the other programs the test needs, with the Debian package of each.
///
/// Windows executables under wine skip such tests (saying so): wine opens
/// its sockets in its wineserver, which runs outside the test's namespace.
pub fn in_private_namespaces(test_name: &str, programs: &[(&str, &str)]) -> bool {
    if crate::conformance::testing_windows_binaries() {
        println!(
            "{test_name}: skipped for Windows executables: wine's sockets are its wineserver's, outside the namespace"
        );
        return false;
    }
    if std::env::var_os(INSIDE_VARIABLE).is_some() {
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        return true;
    }
    let missing: Vec<String> = PROGRAMS
        .iter()
        .chain(programs)
        .filter(|(program, _)| credential_provider::docker_config::find_on_path(program).is_none())
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect();
    assert!(missing.is_empty(), "this test needs {}; .ci/run installs them", missing.join(", "));
    let exe = std::env::current_exe().expect("test binary");
    let mut unshare = Command::new("unshare");
    if !rustix::process::geteuid().is_root() {
        unshare.args(["--user", "--map-root-user"]);
    }
    let output = unshare
        .args(["--net", "--mount", "--fork", "--kill-child", "--"])
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE_VARIABLE, "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "the test failed inside its namespaces: {stderr}");
    assert!(stdout.contains("test result: ok. 1 passed"), "the test did not run inside its namespaces: {stdout}");
    false
}

/// Gives loopback `address` too (`169.254.169.254/32`, `fd00:ec2::23/128`),
/// so that a fake can serve at a metadata service's own address. Only inside
/// [`in_private_namespaces`].
pub fn add_loopback_address(address: &str) {
    assert!(std::env::var_os(INSIDE_VARIABLE).is_some(), "only inside a test's private namespaces");
    let family = if address.contains(':') { "-6" } else { "-4" };
    run(Command::new("ip").args([family, "addr", "add", address, "dev", "lo"]));
}

/// Runs `command`, which must succeed.
pub fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
