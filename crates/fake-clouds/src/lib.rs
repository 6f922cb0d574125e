//! Test support for the plugins: fake cloud endpoints on loopback, and a
//! harness that runs a plugin binary the way the kubelet does.
//!
//! Nothing here is linked into a plugin. Tests, benchmarks and the demo use it
//! to run the real binaries against servers that speak each cloud's documented
//! API, with secrets they can later look for on stderr.

pub mod aws;
pub mod aws_iam;
pub mod azure;
pub mod azure_arm;
pub mod conformance;
pub mod docker_helper;
pub mod examples;
pub mod google;
pub mod google_troubleshooter;
pub mod hardening;
pub mod ibm;
pub mod junit;
pub mod moto;
pub mod netns;
pub mod oci;
pub mod plugins;
pub mod prometheus;
pub mod proxy;
pub mod real_client;
pub mod registry;
pub mod server;
pub mod tls;

pub use aws::FakeAws;
pub use azure::FakeAzure;
pub use conformance::{Exec, PluginUnderTest, TestServiceAccount};
pub use google::FakeGoogle;
pub use ibm::FakeIbm;
pub use oci::FakeOci;
pub use registry::FakeRegistry;
pub use server::FakeServer;
pub use server::Fault;
