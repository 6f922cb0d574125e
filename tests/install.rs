//! The real `credential-provider-install` binary on a fake host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn installer() -> PathBuf {
    fake_clouds::plugins::built_binary("credential-provider-install")
}

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host { dir: tempfile::tempdir().expect("dir") };
        for sub in ["image-bin", "image-config"] {
            std::fs::create_dir_all(host.path(sub)).expect("mkdir");
        }
        host
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn install(&self) -> (Option<i32>, String, String) {
        let output = Command::new(installer())
            .args(["--from-bin", &self.arg("image-bin"), "--from-config", &self.arg("image-config")])
            .args(["--image-credential-provider-bin-dir", &self.arg("host/bin")])
            .args(["--image-credential-provider-config", &self.arg("host/config.d")])
            .output()
            .expect("run");
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        (output.status.code(), text(output.stdout), text(output.stderr))
    }

    fn arg(&self, relative: &str) -> String {
        self.path(relative).display().to_string()
    }
}

fn example(relative: &str) -> PathBuf {
    fake_clouds::examples::path(relative)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn installs_binaries_and_configs_atomically_and_leaves_what_is_up_to_date() {
    let host = Host::new();
    std::fs::write(host.path("image-bin/ecr-credential-provider"), b"#!binary v1").expect("write");
    std::fs::copy(example("ecr/credential-provider-config.yaml"), host.path("image-config/ecr.yaml")).expect("copy");
    let (code, stdout, stderr) = host.install();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("installed:") && stdout.contains("ecr.yaml"), "{stdout}");
    let binary = host.path("host/bin/ecr-credential-provider");
    assert_eq!(std::fs::read(&binary).expect("installed"), b"#!binary v1");
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(mode(&host.path("host/config.d/ecr.yaml")), 0o644);
    let leftovers: Vec<_> =
        std::fs::read_dir(host.path("host/bin")).expect("list").flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    let (code, stdout, _) = host.install();
    assert_eq!(code, Some(0));
    assert!(stdout.contains("up to date") && !stdout.contains("installed:"), "{stdout}");
    std::fs::write(host.path("image-bin/ecr-credential-provider"), b"#!binary v2").expect("write");
    let (code, stdout, _) = host.install();
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&format!("installed: {}", binary.display())), "{stdout}");
    assert_eq!(std::fs::read(&binary).expect("replaced"), b"#!binary v2");
}

#[test]
fn a_config_the_kubelet_would_refuse_installs_nothing() {
    let host = Host::new();
    std::fs::write(host.path("image-bin/ecr-credential-provider"), b"#!binary").expect("write");
    let broken = std::fs::read_to_string(example("ecr/credential-provider-config.yaml"))
        .expect("example")
        .replace("defaultCacheDuration:", "defaultCacheDurationTypo:");
    std::fs::write(host.path("image-config/ecr.yaml"), broken).expect("write");
    let (code, _, stderr) = host.install();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("ecr.yaml") && stderr.contains("nothing was installed"), "{stderr}");
    assert!(!host.path("host/bin").exists() && !host.path("host/config.d").exists(), "the host is untouched");
}

#[test]
fn every_provider_needs_its_binary_and_a_unique_name_across_the_directory() {
    let host = Host::new();
    std::fs::copy(example("gcr/credential-provider-config.yaml"), host.path("image-config/gcr.yaml")).expect("copy");
    let (code, _, stderr) = host.install();
    assert_eq!(code, Some(1));
    assert!(stderr.contains("gcr-credential-provider has no binary"), "{stderr}");

    std::fs::write(host.path("image-bin/gcr-credential-provider"), b"#!binary").expect("write");
    // The host already holds a config of another name for the same provider.
    std::fs::create_dir_all(host.path("host/config.d")).expect("mkdir");
    std::fs::copy(example("gcr/credential-provider-config.yaml"), host.path("host/config.d/old-gcr.yaml"))
        .expect("copy");
    let (code, _, stderr) = host.install();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("gcr-credential-provider"), "{stderr}");
    // Replacing the same file name is an update, not a duplicate.
    std::fs::rename(host.path("host/config.d/old-gcr.yaml"), host.path("host/config.d/gcr.yaml")).expect("rename");
    let (code, _, stderr) = host.install();
    assert_eq!(code, Some(0), "{stderr}");
}
