//! The node's Azure configuration: upstream's `azure.json` (the plugin's one
//! positional argument), with the standard `AZURE_*` variables on top.

use std::path::{Path, PathBuf};

use credential_provider::{Error, Secret};
use serde::Deserialize;

/// An Azure cloud: where Entra ID is, and the audience of registry tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    Public,
    UsGovernment,
    China,
    /// The retired Azure Germany cloud, for its `azurecr.de` registries.
    Germany,
}

impl Cloud {
    /// Parses azure.json's `cloud` (`AzurePublicCloud`, `AzureUSGovernmentCloud`…).
    pub fn parse(name: &str) -> Option<Cloud> {
        match name.to_ascii_lowercase().as_str() {
            "" | "azurepubliccloud" | "azurecloud" | "public" => Some(Cloud::Public),
            "azureusgovernmentcloud" | "azureusgovernment" | "usgovernment" => Some(Cloud::UsGovernment),
            "azurechinacloud" | "china" => Some(Cloud::China),
            "azuregermancloud" | "germany" => Some(Cloud::Germany),
            _ => None,
        }
    }

    /// Entra ID's authority host.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::UsGovernment => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
            Cloud::Germany => "https://login.microsoftonline.de",
        }
    }

    /// The scope of Entra tokens that ACR exchanges.
    pub fn registry_scope(self) -> &'static str {
        match self {
            Cloud::Public | Cloud::Germany => "https://containerregistry.azure.net/.default",
            Cloud::UsGovernment => "https://containerregistry.azure.us/.default",
            Cloud::China => "https://containerregistry.azure.cn/.default",
        }
    }

    /// Azure Resource Manager, and its token scope.
    pub fn resource_manager(self) -> (&'static str, &'static str) {
        match self {
            Cloud::Public => ("https://management.azure.com", "https://management.azure.com/.default"),
            Cloud::UsGovernment => {
                ("https://management.usgovcloudapi.net", "https://management.usgovcloudapi.net/.default")
            }
            Cloud::China => ("https://management.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default"),
            Cloud::Germany => ("https://management.microsoftazure.de", "https://management.microsoftazure.de/.default"),
        }
    }

    /// Microsoft Graph, and its token scope.
    pub fn graph(self) -> (&'static str, &'static str) {
        match self {
            Cloud::Public | Cloud::Germany => ("https://graph.microsoft.com", "https://graph.microsoft.com/.default"),
            Cloud::UsGovernment => ("https://graph.microsoft.us", "https://graph.microsoft.us/.default"),
            Cloud::China => {
                ("https://microsoftgraph.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn/.default")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cloud::Public => "AzurePublicCloud",
            Cloud::UsGovernment => "AzureUSGovernmentCloud",
            Cloud::China => "AzureChinaCloud",
            Cloud::Germany => "AzureGermanCloud",
        }
    }
}

/// The fields of azure.json this plugin reads; the file holds many more,
/// which are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureJson {
    #[serde(default)]
    cloud: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    aad_client_id: String,
    #[serde(default)]
    aad_client_secret: Option<Secret>,
    #[serde(default)]
    use_managed_identity_extension: bool,
    #[serde(default, rename = "userAssignedIdentityID")]
    user_assigned_identity_id: String,
    #[serde(default)]
    aad_federated_token_file: String,
    #[serde(default)]
    use_federated_workload_identity_extension: bool,
    #[serde(default)]
    subscription_id: String,
}

/// The names of the fields of [`AzureJson`], as serde reads them.
const FIELD_NAMES: &[&str] = &[
    "cloud",
    "tenantId",
    "aadClientId",
    "aadClientSecret",
    "useManagedIdentityExtension",
    "userAssignedIdentityID",
    "aadFederatedTokenFile",
    "useFederatedWorkloadIdentityExtension",
    "subscriptionId",
];

/// azure.json's keys renamed to our field names whatever their case, as
/// upstream's Go decoder matches them (`tenantId` and `tenantID` both occur in
/// real files); a key spelt exactly as the field wins over one that differs
/// in case. Keys of no field are dropped: nothing reads them.
fn with_field_names(json: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(object) = json else {
        return json;
    };
    let mut fields = serde_json::Map::new();
    let mut exact = Vec::new();
    for (key, value) in object {
        let Some(field) = FIELD_NAMES.iter().find(|name| name.eq_ignore_ascii_case(&key)) else {
            continue;
        };
        if key == *field {
            exact.push(*field);
            fields.insert(field.to_string(), value);
        } else if !exact.contains(field) {
            fields.insert(field.to_string(), value);
        }
    }
    serde_json::Value::Object(fields)
}

/// The settings in force.
#[derive(Debug)]
pub struct AzureConfig {
    pub cloud: Cloud,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub use_managed_identity: bool,
    /// A client id, or a resource id (`/subscriptions/…`).
    pub user_assigned_identity: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    /// Where `check --as` looks for the registry.
    pub subscription_id: Option<String>,
}

impl AzureConfig {
    /// Reads `path` (if given) and applies the `AZURE_*` variables from `lookup`.
    pub fn load(path: Option<&Path>, lookup: impl Fn(&str) -> Option<String>) -> Result<AzureConfig, Error> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                let unusable = |e: serde_json::Error| {
                    let place = if e.line() > 0 { format!("line {}: ", e.line()) } else { String::new() };
                    Error::Config(format!("{} is not a usable azure.json ({place}{})", path.display(), kind(&e)))
                };
                let json = serde_json::from_str::<serde_json::Value>(&text).map_err(unusable)?;
                serde_json::from_value::<AzureJson>(with_field_names(json)).map_err(unusable)?
            }
            None => AzureJson::default(),
        };
        let non_empty = |s: String| Some(s).filter(|s| !s.trim().is_empty());
        let env = |name: &str| lookup(name).and_then(non_empty);
        let cloud = Cloud::parse(&file.cloud).ok_or_else(|| {
            Error::Config(format!(
                "cloud {:?} is not one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud",
                file.cloud
            ))
        })?;
        // With useManagedIdentityExtension the file's secret is a placeholder
        // (AKS writes "msi"); only AZURE_CLIENT_SECRET overrides the managed identity.
        let client_secret = match env("AZURE_CLIENT_SECRET") {
            Some(secret) => Some(Secret::new(secret)),
            None if file.use_managed_identity_extension => None,
            None => file.aad_client_secret.filter(|s| !s.expose().is_empty()),
        };
        let federated_token_file = env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from).or_else(|| {
            (file.use_federated_workload_identity_extension || !file.aad_federated_token_file.is_empty())
                .then(|| non_empty(file.aad_federated_token_file.clone()))
                .flatten()
                .map(PathBuf::from)
        });
        Ok(AzureConfig {
            cloud,
            tenant_id: env("AZURE_TENANT_ID").or_else(|| non_empty(file.tenant_id)),
            client_id: env("AZURE_CLIENT_ID").or_else(|| non_empty(file.aad_client_id)),
            client_secret,
            use_managed_identity: file.use_managed_identity_extension,
            user_assigned_identity: non_empty(file.user_assigned_identity_id),
            federated_token_file,
            subscription_id: env("AZURE_SUBSCRIPTION_ID").or_else(|| non_empty(file.subscription_id)),
        })
    }
}

/// What kind of JSON problem `e` is: serde's own message may quote the file.
fn kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "cannot be read",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "a field has the wrong type",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str, env: &[(&str, &str)]) -> Result<AzureConfig, Error> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("azure.json");
        std::fs::write(&path, json).expect("write");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AzureConfig::load(Some(&path), |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn reads_azure_json_and_lets_the_environment_override_it() {
        let config = load(
            r#"{"cloud":"AzureChinaCloud","tenantId":"t1","aadClientId":"c1","aadClientSecret":"s1",
                "useManagedIdentityExtension":true,"userAssignedIdentityID":"u1","location":"x","vmType":"vmss"}"#,
            &[("AZURE_CLIENT_ID", "c2")],
        )
        .expect("loads");
        assert_eq!(config.cloud, Cloud::China);
        assert_eq!(config.tenant_id.as_deref(), Some("t1"));
        assert_eq!(config.client_id.as_deref(), Some("c2"));
        assert_eq!(config.client_secret.as_ref().map(Secret::expose), None, "a placeholder beside a managed identity");
        assert!(config.use_managed_identity);
        assert_eq!(config.user_assigned_identity.as_deref(), Some("u1"));
        assert_eq!(config.federated_token_file, None);

        let config = load(
            r#"{"useFederatedWorkloadIdentityExtension":true,"aadFederatedTokenFile":"/var/run/token"}"#,
            &[("AZURE_CLIENT_SECRET", "s2")],
        )
        .expect("loads");
        assert_eq!(config.cloud, Cloud::Public);
        assert_eq!(config.federated_token_file.as_deref(), Some(Path::new("/var/run/token")));
        assert_eq!(config.client_secret.as_ref().map(Secret::expose), Some("s2"));
    }

    #[test]
    fn reads_every_field_whatever_the_case_of_its_key() {
        let config = load(
            r#"{"CLOUD":"AzureUSGovernmentCloud","tenantID":"t1","AADClientID":"c1","aadclientsecret":"s1",
                "UserAssignedIdentityId":"u1","AADFederatedTokenFile":"/t"}"#,
            &[],
        )
        .expect("loads");
        assert_eq!(config.cloud, Cloud::UsGovernment);
        assert_eq!(config.tenant_id.as_deref(), Some("t1"));
        assert_eq!(config.client_id.as_deref(), Some("c1"));
        assert_eq!(config.client_secret.as_ref().map(Secret::expose), Some("s1"));
        assert_eq!(config.user_assigned_identity.as_deref(), Some("u1"));
        assert_eq!(config.federated_token_file.as_deref(), Some(Path::new("/t")));
        let config = load(r#"{"USEMANAGEDIDENTITYEXTENSION":true,"aadClientSecret":"msi"}"#, &[]).expect("loads");
        assert!(config.use_managed_identity);
        assert_eq!(config.client_secret.as_ref().map(Secret::expose), None);
        let config = load(
            r#"{"useFederatedWorkloadIdentityExtension":false,"UseFederatedWorkloadIdentityExtension":true}"#,
            &[],
        )
        .expect("loads");
        assert_eq!(config.federated_token_file, None, "nothing names a token file");
        // The exact spelling wins, whichever comes first.
        for json in [r#"{"tenantId":"exact","TENANTID":"other"}"#, r#"{"TENANTID":"other","tenantId":"exact"}"#] {
            assert_eq!(load(json, &[]).expect("loads").tenant_id.as_deref(), Some("exact"), "{json}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_use_without_quoting_it() {
        let error = load(r#"{"aadClientSecret": "hunter2-secret", "tenantId": 5}"#, &[]).expect_err("wrong type");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(load(r#"{"cloud":"Mars"}"#, &[]).is_err());
        assert!(load("{", &[]).is_err());
    }
}
