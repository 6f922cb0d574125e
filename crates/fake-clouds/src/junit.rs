//! A JUnit XML report as a CI server's test reporter reads it: through
//! junitparser (PyPI), the reader many CI integrations use, which
//! `scripts/test` installs into `.venv`. A test that needs it fails (never
//! skips) without it.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// What a JUnit reader found in a report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct JunitSummary {
    pub suites: Vec<String>,
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    /// `suite: case` of every case that did not pass.
    pub not_passed: Vec<String>,
}

const READER: &str = r#"
import json, sys
from junitparser import JUnitXml, TestSuite, Failure, Error, Skipped
xml = JUnitXml.fromstring(sys.stdin.read())
suites = [xml] if isinstance(xml, TestSuite) else list(xml)
out = {"suites": [], "tests": 0, "failures": 0, "errors": 0, "skipped": 0, "not_passed": []}
for suite in suites:
    out["suites"].append(suite.name)
    for case in suite:
        out["tests"] += 1
        for result in case.result:
            kind = {Failure: "failures", Error: "errors", Skipped: "skipped"}[type(result)]
            out[kind] += 1
            if kind != "skipped":
                out["not_passed"].append(f"{suite.name}: {case.name}")
print(json.dumps(out))
"#;

/// Reads `xml` with junitparser, from the workspace's `.venv`.
pub fn read(xml: &str) -> JunitSummary {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(python.is_file(), "no .venv: run scripts/test (it installs junitparser into .venv)");
    let mut child = Command::new(&python)
        .args(["-c", READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run junitparser");
    child.stdin.take().expect("stdin").write_all(xml.as_bytes()).expect("the report");
    let output = child.wait_with_output().expect("junitparser");
    assert!(
        output.status.success(),
        "junitparser cannot read the report: {}\n{xml}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("junitparser's summary")
}
