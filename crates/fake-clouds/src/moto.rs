//! moto, the third-party AWS emulator, in server mode on loopback.
//!
//! Tests that use it fail (never skip) when moto is missing: `scripts/test`
//! installs it into `.venv`, and a test that silently passes without its
//! emulator would prove nothing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`, killed when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    bin_dir: Option<PathBuf>,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    /// `workspace` is the repository root, where `scripts/test` puts `.venv`.
    pub fn start(workspace: &Path) -> Moto {
        let server = find_moto_server(workspace).unwrap_or_else(|| {
            panic!("moto is not installed: run scripts/test (it installs moto into .venv), or set MOTO_SERVER to a moto_server binary")
        });
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let moto = Moto { child, addr, bin_dir: server.parent().map(Path::to_path_buf) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "moto did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Python that runs moto, for setup scripts that use boto3.
    pub fn python(&self) -> PathBuf {
        self.bin_dir
            .as_ref()
            .map(|d| d.join("python3"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("python3"))
    }

    /// Runs a Python script against this server (`script ENDPOINT`) and returns its stdout.
    pub fn run_script(&self, script: &Path) -> String {
        let output = Command::new(self.python())
            .arg(script)
            .arg(self.url())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(output.status.success(), "{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_moto_server(workspace: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let venv = workspace.join(".venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("moto_server")).find(|candidate| candidate.is_file())
    })
}
