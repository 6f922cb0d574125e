//! The plugin table: every plugin of the workspace, and the fake cloud its
//! tests run it against. The suites that are the same for every cloud
//! (hardening, the docker helper, an unreachable identity endpoint) run over
//! this table, and the tools that run every plugin (the demo, the bench, the
//! soak) name plugins from it. A sixth cloud is one more row here and one
//! [`FakeCloud`] implementation (see ARCHITECTURE.md, "Adding a cloud").

use std::path::PathBuf;

use crate::conformance::{PluginUnderTest, binary_under_test};
use crate::server::Fault;
use crate::{FakeAws, FakeAzure, FakeGoogle, FakeIbm, FakeOci, FakeRegistry};

/// One plugin, as the suites that are the same for every cloud know it.
#[derive(Clone, Copy, Debug)]
pub struct PluginRow {
    /// The plugin's short name (`ecr`): its binary is `<name>-credential-provider`.
    pub name: &'static str,
    /// An image it serves, and one on another registry it serves.
    pub image: &'static str,
    pub other_image: &'static str,
    /// Hosts that look like the plugin's but are not.
    pub lookalikes: &'static [&'static str],
    /// Starts its fake cloud, giving the node an identity there.
    pub start: fn() -> Box<dyn FakeCloud>,
}

impl PluginRow {
    /// The binary's file name.
    pub fn binary_name(&self) -> String {
        format!("{}{}", self.name, credential_provider::provider::BINARY_SUFFIX)
    }

    /// The binary Cargo built beside the running test (or its namesake in
    /// the directory `scripts/check-release` points the tests at).
    pub fn binary(&self) -> PathBuf {
        built_binary(&self.binary_name())
    }
}

/// `name` as Cargo built it for this build: in `target/<profile>/`, beside
/// the `deps/` directory a test runs from (or the directory a tool runs from).
/// The tests that span binaries find them so; a missing one says how to build it.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable");
    let mut dir = exe.parent().expect("its directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = binary_under_test(dir.join(name));
    assert!(binary.is_file(), "{} is not built: run cargo build --workspace (scripts/test does)", binary.display());
    binary
}

/// A plugin's fake cloud, running until dropped.
pub trait FakeCloud {
    /// The plugin, with every endpoint pointed at the fake and the node's identity.
    fn plugin(&self, binary: PathBuf) -> PluginUnderTest;
    /// Every secret the fake handed out or was given so far.
    fn secrets(&self) -> Vec<String>;
    /// How many registry credentials the fake issued so far.
    fn token_calls(&self) -> usize;
    /// Makes token calls fail with `fault` (`None`: answer again).
    fn set_fault(&self, fault: Option<Fault>);
    /// The environment that sends the plugin's identity calls to `address`,
    /// and the path of the first call it makes there; `None` for a cloud
    /// whose SDK says it in its own way (ECR's tests check that themselves).
    fn identity_at(&self, address: &str) -> Option<(Vec<(String, String)>, &'static str)>;
}

/// Every plugin of the workspace.
pub const PLUGINS: &[PluginRow] = &[
    PluginRow {
        name: "ecr",
        image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app",
        other_image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app",
        lookalikes: &[
            "123456789012.dkr.ecr.us-east-1.evil.com/x",
            "12345.dkr.ecr.us-east-1.amazonaws.com/x",
            "public.ecr.aws.evil.io/x",
        ],
        start: || Box::new(FakeAws::start()),
    },
    PluginRow {
        name: "gcr",
        image: "gcr.io/fake-project/app",
        other_image: "us-docker.pkg.dev/fake-project/images/app",
        lookalikes: &["gcr.io.evil.io/x", "a.b.gcr.io/x", "us-python.pkg.dev/p/r/i", "docker.a.b.rep.pkg.dev/p/r/i"],
        start: || Box::new(google_with_registry()),
    },
    PluginRow {
        name: "acr",
        image: "myacr.azurecr.io/team/app",
        other_image: "myacr.westeurope.geo.azurecr.io/team/app",
        lookalikes: &[
            "x.azurecr.io@evil",
            "x.azurecr.io.evil.com/app",
            "evil.com/x.azurecr.io",
            "myacr.eastus.data.azurecr.io/x",
        ],
        start: || Box::new(azure_with_registry()),
    },
    PluginRow {
        name: "icr",
        image: "us.icr.io/team/app",
        other_image: "de.icr.io/team/app",
        lookalikes: &["cp.icr.io/cp/app", "icr.io.evil.com/x", "xx.icr.io/x", "registry.mars.bluemix.net/x"],
        start: || Box::new(ibm_with_registry()),
    },
    PluginRow {
        name: "ocir",
        image: "iad.ocir.io/tenancy-namespace/team/app",
        other_image: "phx.ocir.io/ns/app",
        lookalikes: &["iadx.ocir.io/x", "ocir.us-ashburn-1.oci.evil.com/x", "container-registry.oracle.com/x"],
        start: || Box::new(oci_with_registry()),
    },
];

/// The row of the plugin called `name`.
pub fn plugin(name: &str) -> &'static PluginRow {
    PLUGINS.iter().find(|row| row.name == name).unwrap_or_else(|| panic!("no plugin {name} in the table"))
}

/// The endpoint overrides that send a plugin's identity calls (named
/// `names`, in `CREDENTIAL_PROVIDER_ENDPOINTS`) to `address`.
fn endpoints_at(address: &str, names: &[&str]) -> Vec<(String, String)> {
    let list: Vec<String> = names.iter().map(|name| format!("{name}=http://{address}")).collect();
    vec![("CREDENTIAL_PROVIDER_ENDPOINTS".into(), list.join(","))]
}

impl FakeCloud for FakeAws {
    fn plugin(&self, binary: PathBuf) -> PluginUnderTest {
        PluginUnderTest::new(binary).with_env(self.env_with_static_keys())
    }
    fn secrets(&self) -> Vec<String> {
        FakeAws::secrets(self)
    }
    fn token_calls(&self) -> usize {
        FakeAws::token_calls(self)
    }
    fn set_fault(&self, fault: Option<Fault>) {
        FakeAws::set_fault(self, fault)
    }
    fn identity_at(&self, _address: &str) -> Option<(Vec<(String, String)>, &'static str)> {
        None
    }
}

impl FakeCloud for FakeGoogle {
    fn plugin(&self, binary: PathBuf) -> PluginUnderTest {
        PluginUnderTest::new(binary).with_env(self.endpoint_env())
    }
    fn secrets(&self) -> Vec<String> {
        FakeGoogle::secrets(self)
    }
    fn token_calls(&self) -> usize {
        FakeGoogle::token_calls(self)
    }
    fn set_fault(&self, fault: Option<Fault>) {
        FakeGoogle::set_fault(self, fault)
    }
    fn identity_at(&self, address: &str) -> Option<(Vec<(String, String)>, &'static str)> {
        let env = vec![("GCE_METADATA_HOST".into(), address.to_string())];
        Some((env, "/computeMetadata/v1/instance/service-accounts/default/token"))
    }
}

impl FakeCloud for FakeIbm {
    fn plugin(&self, binary: PathBuf) -> PluginUnderTest {
        PluginUnderTest::new(binary).with_env(self.endpoint_env())
    }
    fn secrets(&self) -> Vec<String> {
        FakeIbm::secrets(self)
    }
    fn token_calls(&self) -> usize {
        self.calls("vpc:iam-token")
    }
    fn set_fault(&self, fault: Option<Fault>) {
        FakeIbm::set_fault(self, fault)
    }
    fn identity_at(&self, address: &str) -> Option<(Vec<(String, String)>, &'static str)> {
        Some((endpoints_at(address, &["imds", "iam"]), "/instance_identity/v1/token"))
    }
}

/// The ACR hosts the fake registry answers for.
const ACR_HOSTS: &[&str] = &[
    "myacr.azurecr.io",
    "myacr-abc123.azurecr.io",
    "myacr.westeurope.geo.azurecr.io",
    "myacr.chinanorth3.geo.azurecr.cn",
    "myacr.germanywestcentral.geo.azurecr.de",
    "other.usgovvirginia.geo.azurecr.us",
    "other.azurecr.us",
    "myacr.azurecr.cn",
    "myacr.azurecr.de",
];

/// The OCIR hosts the fake registry answers for.
const OCIR_HOSTS: &[&str] = &["iad.ocir.io", "phx.ocir.io", "ocir.us-ashburn-1.oci.oraclecloud.com"];

/// The Google registry hosts the fake registry answers for.
const GOOGLE_HOSTS: &[&str] = &["gcr.io", "eu.gcr.io", "us-docker.pkg.dev", "docker.us-central1.rep.pkg.dev"];

/// The ICR hosts the fake registry answers for.
const ICR_HOSTS: &[&str] = &["us.icr.io", "de.icr.io", "icr.io"];

impl FakeCloud for FakeAzure {
    fn plugin(&self, binary: PathBuf) -> PluginUnderTest {
        PluginUnderTest::new(binary).with_env(self.endpoint_env())
    }
    fn secrets(&self) -> Vec<String> {
        FakeAzure::secrets(self)
    }
    fn token_calls(&self) -> usize {
        self.grants().len()
    }
    fn set_fault(&self, fault: Option<Fault>) {
        FakeAzure::set_fault(self, fault)
    }
    fn identity_at(&self, address: &str) -> Option<(Vec<(String, String)>, &'static str)> {
        Some((endpoints_at(address, &["imds", "login"]), "/metadata/identity/oauth2/token"))
    }
}

impl FakeCloud for FakeOci {
    fn plugin(&self, binary: PathBuf) -> PluginUnderTest {
        PluginUnderTest::new(binary).with_env(self.endpoint_env())
    }
    fn secrets(&self) -> Vec<String> {
        FakeOci::secrets(self)
    }
    fn token_calls(&self) -> usize {
        self.calls("auth:x509")
    }
    fn set_fault(&self, fault: Option<Fault>) {
        FakeOci::set_fault(self, fault)
    }
    fn identity_at(&self, address: &str) -> Option<(Vec<(String, String)>, &'static str)> {
        Some((endpoints_at(address, &["imds", "auth"]), "/opc/v2/identity/cert.pem"))
    }
}

/// A cloud's identity service, and a registry that trusts what it issues,
/// answering for `hosts`: the plugin's `check` proves a pull against it.
#[derive(Debug)]
pub struct WithRegistry<C> {
    pub cloud: C,
    pub registry: FakeRegistry,
    hosts: &'static [&'static str],
    /// The registry's count of credentials it issued, where the registry
    /// issues the plugin's credential (ACR's exchange, OCIR's token).
    issued: Option<&'static str>,
}

impl<C> WithRegistry<C> {
    /// `cloud`, and the registry `registry` makes for it.
    fn start(
        cloud: C,
        registry: impl FnOnce(&C) -> FakeRegistry,
        hosts: &'static [&'static str],
        issued: Option<&'static str>,
    ) -> WithRegistry<C> {
        let registry = registry(&cloud);
        WithRegistry { cloud, registry, hosts, issued }
    }
}

impl<C: FakeCloud> FakeCloud for WithRegistry<C> {
    fn plugin(&self, binary: PathBuf) -> PluginUnderTest {
        self.cloud
            .plugin(binary)
            .with_env([("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", self.registry.endpoints_for(self.hosts))])
    }
    fn secrets(&self) -> Vec<String> {
        [self.cloud.secrets(), self.registry.secrets()].concat()
    }
    fn token_calls(&self) -> usize {
        match self.issued {
            Some(what) => self.registry.calls(what),
            None => self.cloud.token_calls(),
        }
    }
    fn set_fault(&self, fault: Option<Fault>) {
        self.cloud.set_fault(fault)
    }
    fn identity_at(&self, address: &str) -> Option<(Vec<(String, String)>, &'static str)> {
        self.cloud.identity_at(address)
    }
}

/// Google's metadata server and STS, and a registry that takes their access tokens.
pub fn google_with_registry() -> WithRegistry<FakeGoogle> {
    let registry = |_: &FakeGoogle| {
        let registry = FakeRegistry::start();
        registry.accept(|user, password| user == "oauth2accesstoken" && password.starts_with("ya29."));
        registry
    };
    WithRegistry::start(FakeGoogle::start(), registry, GOOGLE_HOSTS, None)
}

/// Entra ID and IMDS, and an ACR that trusts their tokens.
pub fn azure_with_registry() -> WithRegistry<FakeAzure> {
    WithRegistry::start(
        FakeAzure::start(),
        |azure| FakeRegistry::start_acr(azure.token_check()),
        ACR_HOSTS,
        Some("exchange"),
    )
}

/// IBM Cloud's IAM and VPC identity, and an ICR that takes their tokens.
pub fn ibm_with_registry() -> WithRegistry<FakeIbm> {
    let registry = |ibm: &FakeIbm| {
        let registry = FakeRegistry::start();
        registry.accept(ibm.registry_check());
        registry
    };
    WithRegistry::start(FakeIbm::start(), registry, ICR_HOSTS, None)
}

/// OCI's metadata service and federation, and an OCIR that checks their signatures.
pub fn oci_with_registry() -> WithRegistry<FakeOci> {
    WithRegistry::start(
        FakeOci::start(),
        |oci| FakeRegistry::start_ocir(oci.signature_check()),
        OCIR_HOSTS,
        Some("ocir-token"),
    )
}

/// Runs `check` for every plugin of the table, one after the other (each
/// starts processes by the dozen, and the suites time what they start), each
/// against its own fake cloud, and fails naming every plugin that failed.
pub fn for_every_plugin(check: impl Fn(&PluginRow, &dyn FakeCloud)) {
    let mut failed = Vec::new();
    for row in PLUGINS {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(row, (row.start)().as_ref())));
        if run.is_err() {
            failed.push(row.name);
        }
    }
    assert!(failed.is_empty(), "failed for {failed:?} (their panics are printed above)");
}
