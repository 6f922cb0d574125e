//! A kubelet simulator for image credential providers: given what a node has
//! (the credential provider config, the plugin bin dir) and an image, it does
//! what the kubelet does and shows it, for any plugin, ours or upstream's.
//!
//! The config is read and validated by the kubelet's rules in the
//! `kubelet-config` crate, which the installer and the refresh agent share.
//!
//! - [`wire`]: the request the kubelet writes and its strict reading of answers;
//! - [`simulate`]: matching, running, reading, and the kubelet's keyring order;
//! - [`report`]: the result for a person, or as JSON for CI;
//! - [`check`]: `kubelet-simulator check`, a release's images checked by the
//!   providers that match them.

pub mod check;
pub mod report;
pub mod simulate;
pub mod wire;
