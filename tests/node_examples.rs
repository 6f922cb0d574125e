//! The node installation examples agree with each other and with the plugins:
//! the DaemonSet and the systemd units fill the paths the kubelet is told to
//! use, and the per-plugin configs merge into one config directory.

use std::path::PathBuf;

use credential_provider::cache::SYSTEM_DIR;

const BIN_DIR: &str = "/etc/kubernetes/image-credential-provider";
const CONFIG_DIR: &str = "/etc/kubernetes/image-credential-provider-config.d";

fn example(relative: &str) -> PathBuf {
    fake_clouds::examples::path(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(example(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn the_daemonset_fills_the_kubelets_paths_and_refreshes_the_shared_cache() {
    let text = read("node/daemonset.yaml");
    let daemonset: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("the DaemonSet is YAML");
    assert_eq!(daemonset["kind"], "DaemonSet");
    let spec = &daemonset["spec"]["template"]["spec"];
    let host_paths: Vec<&str> =
        spec["volumes"].as_sequence().expect("volumes").iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    assert_eq!(host_paths, [BIN_DIR, CONFIG_DIR, SYSTEM_DIR]);
    assert!(text.contains(&format!("--image-credential-provider-bin-dir={BIN_DIR}")));
    assert!(text.contains(&format!("--image-credential-provider-config={CONFIG_DIR}")));
    let install = &spec["initContainers"][0];
    assert!(install["command"].is_null(), "the image's entrypoint, the installer, runs: no shell");
    let args: Vec<&str> = install["args"].as_sequence().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(
        args,
        [
            "--from-bin=/opt/kubelet-credential-providers",
            "--from-config=/config",
            "--image-credential-provider-bin-dir=/host/bin",
            "--image-credential-provider-config=/host/config"
        ]
    );
    let containers = spec["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1, "one agent for every plugin");
    let refresh = &containers[0];
    assert_eq!(refresh["command"][0], "/opt/kubelet-credential-providers/credential-provider-refresh");
    let args: Vec<&str> = refresh["args"].as_sequence().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(
        args,
        [
            "--image-credential-provider-config=/host/config",
            "--image-credential-provider-bin-dir=/host/bin",
            "--every=5m",
            "--metrics-address=$(POD_IP):9477"
        ]
    );
    assert_eq!(refresh["env"][0]["value"], SYSTEM_DIR);
    // The metrics port, named as the PodMonitor and the scrape config find it.
    assert_eq!(refresh["env"][1]["name"], "POD_IP");
    assert_eq!(refresh["env"][1]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
    assert_eq!(refresh["ports"][0]["name"], "metrics");
    assert_eq!(refresh["ports"][0]["containerPort"], 9477);
    let containerfile = read("node/Containerfile");
    assert!(containerfile.contains("FROM scratch"), "{containerfile}");
    assert!(containerfile.contains("COPY dist/linux-${ARCH}/ /opt/kubelet-credential-providers/"), "{containerfile}");
    assert!(
        containerfile.contains("ENTRYPOINT [\"/opt/kubelet-credential-providers/credential-provider-install\"]"),
        "{containerfile}"
    );
}

#[test]
fn the_systemd_units_run_refresh_against_the_kubelets_cache() {
    let service = read("node/systemd/kubelet-credential-providers-refresh.service");
    assert!(service.contains(&format!("ExecStart={BIN_DIR}/credential-provider-refresh")), "{service}");
    assert!(service.contains(&format!("--image-credential-provider-config={CONFIG_DIR}")), "{service}");
    assert!(service.contains(&format!("--image-credential-provider-bin-dir={BIN_DIR}")), "{service}");
    assert!(service.contains(&format!("CREDENTIAL_PROVIDER_CACHE_DIR={SYSTEM_DIR}")));
    assert!(service.contains(&format!("ReadWritePaths={SYSTEM_DIR}")));
    let timer = read("node/systemd/kubelet-credential-providers-refresh.timer");
    assert!(timer.contains("OnUnitActiveSec=") && timer.contains("RandomizedDelaySec="), "{timer}");
}

#[test]
fn the_plugin_configs_merge_into_one_config_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let plugins = fake_clouds::plugins::PLUGINS;
    for row in plugins {
        let from = example(&format!("{}/credential-provider-config.yaml", row.name));
        std::fs::copy(&from, dir.path().join(format!("{}.yaml", row.name))).expect("copy");
    }
    let providers = kubelet_config::load(dir.path()).expect("a valid directory");
    let names: Vec<String> = providers.iter().map(|p| p.spec.name.clone()).collect();
    // Merged in the lexical order of the files, each plugin under its binary's name.
    let mut expected: Vec<String> = plugins.iter().map(|row| row.binary_name()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

/// The alert rules pass Prometheus's own checks and their unit tests (cases
/// that fire and cases that do not), and the scrape configs find the
/// DaemonSet's metrics port under the job name the rules use.
#[test]
fn the_monitoring_examples_check_and_their_alert_tests_pass() {
    use fake_clouds::prometheus::promtool;
    let rules = example("monitoring/alerts.yaml").display().to_string();
    let (code, output) = promtool(&["check", "rules", &rules], None);
    assert_eq!(code, Some(0), "{output}");
    let tests = example("monitoring/alerts-test.yaml").display().to_string();
    let (code, output) = promtool(&["test", "rules", &tests], None);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("SUCCESS"), "{output}");

    const JOB: &str = "kubelet-credential-providers";
    assert!(read("monitoring/alerts.yaml").contains(&format!("up{{job=\"{JOB}\"}}")));
    let daemonset: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read("node/daemonset.yaml")).expect("YAML");
    let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["app.kubernetes.io/name"], JOB);

    let monitor: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read("monitoring/podmonitor.yaml")).expect("YAML");
    assert_eq!(monitor["kind"], "PodMonitor");
    assert_eq!(monitor["metadata"]["namespace"], daemonset["metadata"]["namespace"]);
    assert_eq!(monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], JOB);
    // The job label is the pod's name label: the job the rules name.
    assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "metrics");

    // Debian's Prometheus is built without Kubernetes discovery, so promtool
    // cannot check this file here; its shape is checked instead.
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read("monitoring/prometheus.yml")).expect("YAML");
    assert_eq!(config["rule_files"][0], "alerts.yaml");
    let job = &config["scrape_configs"][0];
    assert_eq!(job["job_name"], JOB);
    let kept: Vec<&str> = job["relabel_configs"]
        .as_sequence()
        .expect("relabel_configs")
        .iter()
        .filter(|rule| rule["action"] == "keep")
        .filter_map(|rule| rule["regex"].as_str())
        .collect();
    assert_eq!(kept, [JOB, "metrics"]);
}

/// The Windows DaemonSet runs the agent on the node as LocalSystem, from the
/// paths AKS Windows gives the kubelet, on the kubelet's own cache.
#[test]
fn the_windows_daemonset_refreshes_the_kubelets_cache_from_its_paths() {
    let daemonset: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("node/windows-daemonset.yaml")).expect("the DaemonSet is YAML");
    let spec = &daemonset["spec"]["template"]["spec"];
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "windows");
    assert_eq!(spec["securityContext"]["windowsOptions"]["hostProcess"], true);
    assert_eq!(spec["securityContext"]["windowsOptions"]["runAsUserName"], "NT AUTHORITY\\SYSTEM");
    let refresh = &spec["containers"][0];
    assert_eq!(refresh["command"][0], r"c:\var\lib\kubelet\credential-provider\credential-provider-refresh.exe");
    let args: Vec<&str> = refresh["args"].as_sequence().expect("args").iter().filter_map(|a| a.as_str()).collect();
    // The AKS Windows config, and the bin dir it is installed beside.
    let aks = fake_clouds::examples::load("platforms/aks-windows.yaml");
    assert_eq!(aks[0].spec.name, "acr-credential-provider");
    assert!(args.contains(&r"--image-credential-provider-config=c:\k\credential-provider-config.yaml"), "{args:?}");
    assert!(args.contains(&r"--image-credential-provider-bin-dir=c:\var\lib\kubelet\credential-provider"), "{args:?}");
    assert_eq!(refresh["env"][0]["name"], "CREDENTIAL_PROVIDER_CACHE_DIR");
    assert_eq!(refresh["env"][0]["value"], r"c:\ProgramData\kubelet-credential-providers");
    assert!(args.contains(&"--metrics-address=:9477"));
    assert_eq!(refresh["ports"][0]["containerPort"], 9477);
}
