//! The images a release deploys, read from its Kubernetes manifests, for
//! `check --manifest`: every container, init container and ephemeral
//! container of Pods and of every workload that makes them (Deployment,
//! StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob,
//! PodTemplate), with the service account each pod runs as.
//!
//! A file is YAML or JSON, of one document or several (`---`), and `List`s
//! are read item by item. Other kinds (Services, ConfigMaps…) hold no image
//! and are passed over; a document that is not a Kubernetes object, or an
//! image that is not a string, is an error naming where it is.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

/// The most a manifest may hold: a release's manifests are kilobytes, and a
/// CI job should not read a runaway file whole.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// One image a manifest deploys, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestImage {
    pub image: String,
    /// The workloads and containers that use it: `Deployment web/api, container app`.
    pub sources: Vec<String>,
    /// The service accounts its pods run as (`namespace/name`).
    pub service_accounts: Vec<String>,
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {source_name}: {message}")]
    Read { source_name: String, message: String },
    #[error("{source_name}: not YAML or JSON: {message}")]
    Syntax { source_name: String, message: String },
    #[error("{source_name}: document {document}: {message}")]
    Object { source_name: String, document: usize, message: String },
    #[error("{source_name}: larger than {} MiB", MAX_MANIFEST_BYTES / (1024 * 1024))]
    TooLarge { source_name: String },
}

/// The images of the manifest file at `path` (`-`: stdin, which must be piped).
pub fn read(path: &std::path::Path) -> Result<Vec<ManifestImage>, ManifestError> {
    use std::io::Read as _;
    let stdin = path.as_os_str() == "-";
    let source_name = if stdin { "stdin".to_string() } else { path.display().to_string() };
    let read_error = |message: String| ManifestError::Read { source_name: source_name.clone(), message };
    let bytes = match stdin {
        true => crate::stdio::read_stdin(MAX_MANIFEST_BYTES, "nothing is piped in")
            .map_err(|e| read_error(e.to_string()))?,
        false => {
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(MAX_MANIFEST_BYTES as u64 + 1).read_to_end(&mut bytes))
                .map_err(|e| read_error(e.to_string()))?;
            bytes
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| read_error("not UTF-8 text".to_string()))?;
    images(&source_name, &text)
}

/// The images of the manifests in `text` (read from `source_name`), in the
/// order they first appear, each once, with every place that uses it.
pub fn images(source_name: &str, text: &str) -> Result<Vec<ManifestImage>, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { source_name: source_name.to_string() });
    }
    let mut found = Found::default();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde::Deserialize::deserialize(document)
            .map_err(|e| ManifestError::Syntax { source_name: source_name.to_string(), message: e.to_string() })?;
        let object_error = |message: String| ManifestError::Object {
            source_name: source_name.to_string(),
            document: index + 1,
            message,
        };
        match value {
            // An empty document (a trailing `---`, a file of comments).
            Value::Null => {}
            value => found.object(&value, "").map_err(object_error)?,
        }
    }
    let mut images: Vec<(usize, ManifestImage)> = found.images.into_values().collect();
    images.sort_by_key(|(order, _)| *order);
    Ok(images.into_iter().map(|(_, image)| image).collect())
}

/// What the documents read so far deploy.
#[derive(Default)]
struct Found {
    /// By image: the order it first appeared, and the image.
    images: BTreeMap<String, (usize, ManifestImage)>,
}

impl Found {
    /// One Kubernetes object (`at` says where it sits in a List).
    fn object(&mut self, object: &Value, at: &str) -> Result<(), String> {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}no kind: not a Kubernetes object"))?;
        let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("(unnamed)");
        let namespace =
            object.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default");
        let spec = object.get("spec");
        let pod_spec = match kind {
            "List" => {
                let items = object.get("items").and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default();
                for (index, item) in items.iter().enumerate() {
                    self.object(item, &format!("{at}items[{index}]: "))?;
                }
                return Ok(());
            }
            "Pod" => spec,
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
                spec.and_then(|s| s.get("template")).and_then(|t| t.get("spec"))
            }
            "CronJob" => spec
                .and_then(|s| s.get("jobTemplate"))
                .and_then(|j| j.get("spec"))
                .and_then(|s| s.get("template"))
                .and_then(|t| t.get("spec")),
            "PodTemplate" => object.get("template").and_then(|t| t.get("spec")),
            // Everything else deploys no image.
            _ => return Ok(()),
        };
        let Some(pod_spec) = pod_spec else {
            return Err(format!("{at}{kind} {name} has no pod template"));
        };
        let service_account = pod_spec
            .get("serviceAccountName")
            .or_else(|| pod_spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            let containers = pod_spec.get(list).and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or_default();
            for container in containers {
                let container_name = container.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
                let what = format!("{at}{kind} {namespace}/{name}, {} {container_name}", singular(list));
                let image = match container.get("image") {
                    Some(Value::String(image)) if !image.trim().is_empty() => image.trim(),
                    // A container without an image takes it from elsewhere (a
                    // Kustomize or Helm value not rendered): nothing to check.
                    None | Some(Value::Null) => continue,
                    Some(_) => return Err(format!("{what}: the image is not a string")),
                };
                self.add(image, what, format!("{namespace}/{service_account}"));
            }
        }
        Ok(())
    }

    fn add(&mut self, image: &str, source: String, service_account: String) {
        let order = self.images.len();
        let (_, entry) = self.images.entry(image.to_string()).or_insert_with(|| {
            (order, ManifestImage { image: image.to_string(), sources: Vec::new(), service_accounts: Vec::new() })
        });
        entry.sources.push(source);
        if !entry.service_accounts.contains(&service_account) {
            entry.service_accounts.push(service_account);
        }
    }
}

fn singular(list: &str) -> &'static str {
    match list {
        "initContainers" => "init container",
        "ephemeralContainers" => "ephemeral container",
        _ => "container",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_of(text: &str) -> Vec<(String, Vec<String>, Vec<String>)> {
        images("test.yaml", text)
            .expect("reads")
            .into_iter()
            .map(|i| (i.image, i.sources, i.service_accounts))
            .collect()
    }

    #[test]
    fn every_workload_kind_and_container_list() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      serviceAccountName: web
      initContainers: [{name: migrate, image: "1.dkr.ecr.us-east-1.amazonaws.com/migrate:1"}]
      containers:
        - {name: app, image: "1.dkr.ecr.us-east-1.amazonaws.com/web:2"}
        - {name: proxy, image: "gcr.io/p/proxy:3"}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec: {jobTemplate: {spec: {template: {spec: {containers: [{name: job, image: "gcr.io/p/proxy:3"}]}}}}}
---
# only a comment
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"#;
        let found = images_of(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].0, "1.dkr.ecr.us-east-1.amazonaws.com/migrate:1");
        assert_eq!(found[0].1, ["Deployment shop/web, init container migrate"]);
        assert_eq!(found[0].2, ["shop/web"]);
        // One image used twice: both places, both service accounts.
        assert_eq!(found[2].0, "gcr.io/p/proxy:3");
        assert_eq!(found[2].1, ["Deployment shop/web, container proxy", "CronJob default/nightly, container job"]);
        assert_eq!(found[2].2, ["shop/web", "default/default"]);
    }

    #[test]
    fn lists_json_pods_and_ephemeral_containers() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"debug"},
             "spec":{"serviceAccount":"old","containers":[{"name":"a","image":"myacr.azurecr.io/a"}],
                     "ephemeralContainers":[{"name":"shell","image":"myacr.azurecr.io/busybox"}]}},
            {"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db"},
             "spec":{"template":{"spec":{"containers":[{"name":"db","image":"us.icr.io/ns/db"}]}}}}]}"#;
        let found = images_of(text);
        let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["myacr.azurecr.io/a", "myacr.azurecr.io/busybox", "us.icr.io/ns/db"]);
        assert_eq!(found[1].1, ["items[0]: Pod default/debug, ephemeral container shell"]);
        assert_eq!(found[0].2, ["default/old"]);
    }

    #[test]
    fn what_is_not_a_manifest_is_said_with_its_place() {
        let error = images("m.yaml", "kind: Deployment\nmetadata: {name: x}\nspec: {}\n").expect_err("no template");
        assert_eq!(error.to_string(), "m.yaml: document 1: Deployment x has no pod template");
        let error = images("m.yaml", "---\n{}\n---\na: [\n").expect_err("syntax");
        assert!(error.to_string().starts_with("m.yaml: "), "{error}");
        let error = images("m.yaml", "just text").expect_err("no kind");
        assert!(error.to_string().contains("document 1: no kind"), "{error}");
        let error = images("m.yaml", "kind: Pod\nspec: {containers: [{name: a, image: [1]}]}\n")
            .expect_err("image not a string");
        assert!(error.to_string().contains("the image is not a string"), "{error}");
        assert!(matches!(images("m.yaml", &" ".repeat(MAX_MANIFEST_BYTES + 1)), Err(ManifestError::TooLarge { .. })));
    }
}
