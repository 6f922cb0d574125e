//! The real Prometheus, for the refresh agent's metrics: `promtool` to check
//! an exposition and rule files, a Prometheus server that scrapes the agent,
//! and a reader of the text format for what a test asserts.
//!
//! Both come from Debian's `prometheus` package, which `scripts/test`
//! installs; a test that needs them fails (never skips) without them.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `program` on PATH, or a failure that says how to get it.
fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| panic!("{program} is missing: apt-get install prometheus (scripts/test does, as root)"))
}

/// Runs `promtool ARGS`, with `stdin` on its standard input: its exit code
/// and everything it printed.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String) {
    let mut child = Command::new(require("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default().as_bytes()).expect("promtool's input");
    drop(input);
    let output = child.wait_with_output().expect("promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// A loopback port nothing listens on just now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// `GET path` on `address` over plain HTTP/1.0: the status and the body, or
/// `None` when nothing answers.
pub fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Calls `poll` every 200 ms until it returns something, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = poll() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of the sample of `name` whose labels are exactly `labels`, in
/// an exposition in the text format.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    exposition.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let mut found: Vec<String> = label_text
            .split("\",")
            .filter(|l| !l.is_empty())
            .map(|l| format!("{}\"", l.trim_end_matches('"')))
            .collect();
        found.sort();
        (metric == name && found == wanted).then(|| value.parse().ok()).flatten()
    })
}

/// Whether any sample of the exposition carries the label `key="value"`.
pub fn mentions(exposition: &str, key: &str, value: &str) -> bool {
    let label = format!("{key}=\"{value}\"");
    exposition.lines().any(|line| !line.starts_with('#') && line.contains(&label))
}

/// A Prometheus server on loopback that scrapes `target` every second; killed when dropped.
#[derive(Debug)]
pub struct PrometheusServer {
    child: Child,
    pub address: SocketAddr,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts one scraping `target`'s `/metrics` as the job `job`, and waits until it answers.
    pub fn start(job: &str, target: SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("prometheus dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("prometheus.yml");
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(require("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus");
        let server = PrometheusServer { child, address, dir };
        let ready = wait_for(Duration::from_secs(30), || get(address, "/-/ready").filter(|(status, _)| *status == 200));
        assert!(ready.is_some(), "prometheus did not become ready: {}", server.log());
        server
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The result of an instant query through the HTTP API (`/api/v1/query`).
    pub fn query(&self, expression: &str) -> serde_json::Value {
        let path = format!("/api/v1/query?query={}", percent_encode(expression));
        let (status, body) = get(self.address, &path).expect("prometheus answers");
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("the API answers JSON");
        answer["data"]["result"].clone()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A query string's value, every byte but the unreserved ones escaped.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_their_whole_label_set() {
        let text = "# HELP x y\n# TYPE x gauge\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\"} 4\ny 5\n";
        assert_eq!(sample(text, "x", &[("b", "2"), ("a", "1")]), Some(3.0));
        assert_eq!(sample(text, "x", &[("a", "1")]), Some(4.0));
        assert_eq!(sample(text, "y", &[]), Some(5.0));
        assert_eq!(sample(text, "x", &[("a", "2")]), None);
        assert!(mentions(text, "b", "2") && !mentions(text, "b", "3"));
        assert_eq!(percent_encode("a{b=\"c\"}"), "a%7Bb%3D%22c%22%7D");
    }
}
