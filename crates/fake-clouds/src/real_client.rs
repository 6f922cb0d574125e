//! A real OCI client pulling through a plugin installed as its docker
//! credential helper, from a real registry, under the cloud's registry name.
//!
//! The clients are skopeo and docker's CLI; the registry is the CNCF distribution registry
//! (Debian's `docker-registry`), serving TLS and `htpasswd` basic auth. Both
//! run inside a private network and mount namespace (`unshare`) whose own
//! `/etc/hosts` sends the cloud's registry host to loopback, so the client
//! dials `123456789012.dkr.ecr.us-east-1.amazonaws.com:443` as it would in a
//! CI job, and nothing of the machine's own network or files is touched.
//!
//! The registry accepts exactly the credential the fake cloud issued to the
//! helper. The client then reads a manifest with the helper's answer; then,
//! with a fresh cache, the helper fetches a new credential the registry does
//! not know, and the client must fail: the credential really travelled.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::conformance::{Exec, PluginUnderTest, expect_no_secrets};
use crate::docker_helper::{HelperCredential, expect_credential};
use crate::netns::run;

/// The programs these tests run besides `unshare` and `ip`, and the Debian
/// package of each (`.ci/run` installs them).
const PROGRAMS: &[(&str, &str)] = &[
    ("mount", "mount"),
    ("openssl", "openssl"),
    ("htpasswd", "apache2-utils"),
    ("tar", "tar"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("docker", "docker.io (its CLI)"),
];

/// bcrypt, the only hash the registry's htpasswd reads, looks at the first
/// 72 bytes of a password.
const BCRYPT_LENGTH: usize = 72;

/// Whether the calling test is running inside its private namespaces (see
/// [`crate::netns::in_private_namespaces`]), with the programs it needs.
pub fn in_private_namespaces(test_name: &str) -> bool {
    crate::netns::in_private_namespaces(test_name, PROGRAMS)
}

/// The whole story for `image` (a repository of the plugin's registry, on
/// port 443): install the helper as a user would, get a credential, stand
/// up a registry that accepts only it, push `image`, have skopeo and docker
/// read its manifest through the helper, then fail with a credential the
/// registry does not know. Runs inside [`in_private_namespaces`].
pub fn pull_through_helper(plugin: &PluginUnderTest, image: &str, secrets: impl Fn() -> Vec<String>) {
    let (host, repository) = image.split_once('/').expect("image with a repository");
    let work = tempfile::tempdir().expect("work dir");
    resolve_to_loopback(work.path(), host);
    // containers/image's auth.json lives here: an empty one of this test's own.
    let runtime_dir = work.path().join("run");
    fs::create_dir_all(&runtime_dir).expect("runtime dir");

    // Installed as the README says: a credHelpers entry in ~/.docker/config.json
    // and the docker-credential-NAME link in a directory on PATH.
    let bin = work.path().join("bin");
    let config = plugin.home().join(".docker").join("config.json");
    let install = plugin.exec(
        &[
            "install-docker-helper",
            "--bin-dir",
            &bin.display().to_string(),
            "--config",
            &config.display().to_string(),
            host,
        ],
        b"",
    );
    assert_eq!(install.code, Some(0), "install-docker-helper: {install:?}");
    let link = fs::read_dir(&bin).expect("bin dir").next().expect("a helper link").expect("entry").path();
    println!("installed: {}", install.stdout.trim());

    let helper = plugin.with_program(&link);
    let issued = expect_credential(&helper.exec(&["get"], host.as_bytes()), host, &secrets());
    let registry = Registry::start(work.path(), host, &issued);
    let reference = format!("docker://{host}/{repository}:1.0");
    registry.push(work.path(), &reference, &issued);

    // The clients, with the plugin's environment (its cloud and cache), the
    // helper on PATH and the config written above, and nothing else to log
    // in with: skopeo, and docker's own CLI. `docker manifest inspect` reads
    // a registry's CA only from /etc/docker/certs.d, which this test leaves
    // alone: it skips verifying the certificate instead (--insecure), which
    // changes nothing of how it gets and sends the credential.
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut skopeo = plugin.with_program(Path::new("skopeo"));
    skopeo.set_env("XDG_RUNTIME_DIR", &runtime_dir.display().to_string());
    let mut docker = plugin.with_program(Path::new("docker"));
    docker.set_env("DOCKER_CONFIG", &config.parent().expect("config dir").display().to_string());
    let certs = registry.certs.display().to_string();
    let named = format!("{host}/{repository}:1.0");
    let mut clients = [
        ("skopeo", skopeo, vec!["inspect", "--cert-dir", &certs, &reference]),
        ("docker", docker, vec!["manifest", "inspect", "--insecure", &named]),
    ];
    for (name, client, args) in &mut clients {
        client.set_env("PATH", &path);
        let pulled = client.exec(args, b"");
        assert_eq!(pulled.code, Some(0), "{name} through the helper: {}", pulled.stderr);
        expect_no_secrets(&pulled.stderr, &secrets());
        let manifest: serde_json::Value = serde_json::from_str(&pulled.stdout).expect("the client's JSON");
        let digest = match *name {
            "skopeo" => manifest["Digest"].as_str().map(str::to_string),
            _ => manifest["config"]["digest"].as_str().map(|config| format!("config {config}")),
        };
        assert!(digest.as_ref().is_some_and(|d| d.contains("sha256:")), "{name}: {manifest}");
        println!("{name} read {named} ({}) through {}", digest.unwrap_or_default(), link.display());
    }

    // A credential the registry does not know: the helper, with a fresh
    // cache, fetches a new one, and each client must be refused with it.
    let fresh_cache = work.path().join("fresh-cache").display().to_string();
    let mut helper = plugin.with_program(&link);
    helper.set_env("CREDENTIAL_PROVIDER_CACHE_DIR", &fresh_cache);
    let renewed = expect_credential(&helper.exec(&["get"], host.as_bytes()), host, &secrets());
    assert_ne!(
        prefix(&renewed.secret),
        prefix(&issued.secret),
        "the second credential must differ from the first within bcrypt's {BCRYPT_LENGTH} bytes, or the registry would take it"
    );
    for (name, client, args) in &mut clients {
        client.set_env("CREDENTIAL_PROVIDER_CACHE_DIR", &fresh_cache);
        let log_before = registry.log().len();
        let refused = client.exec(args, b"");
        assert_ne!(refused.code, Some(0), "{name} must fail with a credential the registry does not know");
        expect_no_secrets(&refused.stderr, &secrets());
        // The registry's own word that it was sent a credential and refused
        // it (docker's CLI reports any refusal as "no such manifest").
        // distribution logs `msg="error authenticating user \"AWS\": authentication failure"`.
        let refused_user = |line: &str| line.contains("error authenticating user") && line.contains(&renewed.username);
        assert!(
            registry.logs_after(log_before, refused_user),
            "{name}: the registry refused no credential: {}",
            refused.stderr
        );
        println!("{name} was refused with a credential the registry does not know: {}", refused.stderr.trim());
    }
}

fn prefix(secret: &str) -> &str {
    &secret[..secret.len().min(BCRYPT_LENGTH)]
}

/// Gives this mount namespace its own `/etc/hosts`, which sends `host` to
/// loopback.
fn resolve_to_loopback(work: &Path, host: &str) {
    let hosts = work.join("hosts");
    fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {host}\n")).expect("hosts");
    run(Command::new("mount").arg("--bind").arg(&hosts).arg("/etc/hosts"));
}

/// The distribution registry on `host:443`, with a certificate for `host`
/// from a CA of its own, accepting only `credential`.
struct Registry {
    certs: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Registry {
    fn start(work: &Path, host: &str, credential: &HelperCredential) -> Registry {
        let certs = work.join("certs");
        fs::create_dir_all(&certs).expect("certs dir");
        let ca = (certs.join("ca.crt"), work.join("ca.key"));
        let server = (work.join("server.crt"), work.join("server.key"));
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=real-client test CA"])
            .arg("-keyout")
            .arg(&ca.1)
            .arg("-out")
            .arg(&ca.0));
        let request = work.join("server.csr");
        run(Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={host}")])
            .arg("-keyout")
            .arg(&server.1)
            .arg("-out")
            .arg(&request));
        let extensions = work.join("server.ext");
        fs::write(&extensions, format!("subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n")).expect("ext");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-set_serial", "1"])
            .arg("-in")
            .arg(&request)
            .arg("-CA")
            .arg(&ca.0)
            .arg("-CAkey")
            .arg(&ca.1)
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(&server.0));

        // htpasswd reads the password on stdin, so it is on no command line.
        let htpasswd = work.join("htpasswd");
        let mut child = Command::new("htpasswd")
            .args(["-niB", &credential.username])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("htpasswd");
        child.stdin.take().expect("stdin").write_all(credential.secret.as_bytes()).expect("password");
        let output = child.wait_with_output().expect("htpasswd");
        assert!(output.status.success(), "htpasswd: {}", String::from_utf8_lossy(&output.stderr));
        fs::write(&htpasswd, &output.stdout).expect("htpasswd file");

        let storage = work.join("storage");
        let settings = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:443\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: real-client-test\n    path: {}\n",
            storage.display(),
            server.0.display(),
            server.1.display(),
            htpasswd.display()
        );
        let settings_path = work.join("registry.yml");
        fs::write(&settings_path, settings).expect("registry config");
        let log = fs::File::create(work.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&settings_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { certs, log: work.join("registry.log"), child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect("127.0.0.1:443").is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen: {}",
                fs::read_to_string(work.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// What the registry logged so far.
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the registry logs a line that is `wanted` after the first
    /// `from` bytes of its log, within a few seconds (it logs a request once
    /// it has answered it).
    fn logs_after(&self, from: usize, wanted: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log().get(from..).is_some_and(|new| new.lines().any(&wanted)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pushes a one-layer image to `reference` with `credential` given
    /// directly, not through the helper.
    fn push(&self, work: &Path, reference: &str, credential: &HelperCredential) {
        let layout = write_oci_layout(work);
        let creds = format!("{}:{}", credential.username, credential.secret);
        let exec = Exec::wait(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--dest-cert-dir", &self.certs.display().to_string(), "--dest-creds", &creds])
                .arg(format!("oci:{}:1.0", layout.display()))
                .arg(reference)
                .env("XDG_RUNTIME_DIR", work.join("run"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("skopeo copy"),
        );
        assert_eq!(exec.code, Some(0), "push with the issued credential: {}", exec.stderr);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image layout holding one image, tagged `1.0`, of one layer.
fn write_oci_layout(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let blobs = layout.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).expect("blobs");
    let content = work.join("content");
    fs::create_dir_all(&content).expect("content");
    fs::write(content.join("hello.txt"), "pulled through a docker credential helper\n").expect("file");
    let layer_path = work.join("layer.tar");
    run(Command::new("tar").arg("-cf").arg(&layer_path).arg("-C").arg(&content).arg("hello.txt"));
    let layer = fs::read(&layer_path).expect("layer");
    let add = |bytes: &[u8]| -> (String, usize) {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        fs::write(blobs.join(&digest["sha256:".len()..]), bytes).expect("blob");
        (digest, bytes.len())
    };
    let (layer_digest, layer_size) = add(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = add(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size }],
    });
    let (manifest_digest, manifest_size) = add(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": "1.0" },
        }],
    });
    fs::write(layout.join("index.json"), index.to_string()).expect("index");
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    layout
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}
