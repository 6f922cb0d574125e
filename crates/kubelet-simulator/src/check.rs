//! `kubelet-simulator check`: a release's images checked across clouds, each
//! by the providers the kubelet would run for it.
//!
//! Each image goes to every provider whose `matchImages` matches it, as the
//! kubelet would send it; each provider runs once, as
//! `<bin-dir>/<name> <args…> check --image … --output json` with the config's
//! `env`, and a service account's token and annotations only where the
//! provider's `tokenAttributes` would have the kubelet send them. Their JSON
//! reports are merged into one [`CheckRun`], in the order the images were
//! given; an image no provider matches is pulled without credentials, which
//! is no failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use credential_provider::check::{CheckRun, ImageCheck, Verdict, Wanted};
use credential_provider::image::ImageRef;
use kubelet_config::Provider;

use crate::simulate::run;

/// The identity the pods pull as, when not the node's.
#[derive(Clone, Debug, Default)]
pub struct CheckServiceAccount {
    /// The file holding its token (for the providers' own audience).
    pub token_file: Option<PathBuf>,
    pub annotations: BTreeMap<String, String>,
    /// Provider name → a principal its cloud evaluates instead (`check --as`),
    /// for the nodes' identity checked from a runner.
    pub principals: BTreeMap<String, String>,
}

/// Checks every image of `wanted` with the providers of `providers` that
/// match it, each plugin run from `bin_dir` for at most `timeout`.
pub fn check(
    providers: &[Provider],
    bin_dir: &Path,
    wanted: &[Wanted],
    service_account: &CheckServiceAccount,
    timeout: Duration,
) -> CheckRun {
    // Each provider's images, as the kubelet matches them.
    let mut by_provider: Vec<(&Provider, Vec<&str>)> = providers.iter().map(|p| (p, Vec::new())).collect();
    for want in wanted {
        let as_sent =
            ImageRef::parse(&want.image).map(|image| image.repository()).unwrap_or_else(|_| want.image.clone());
        for (provider, images) in &mut by_provider {
            if provider.matches(&as_sent) && !images.contains(&want.image.as_str()) {
                images.push(&want.image);
            }
        }
    }
    let mut found: BTreeMap<(&str, &str), ImageCheck> = BTreeMap::new();
    for (provider, images) in &by_provider {
        if images.is_empty() {
            continue;
        }
        let name = provider.spec.name.as_str();
        for mut checked in run_check(provider, bin_dir, images, service_account, timeout) {
            checked.provider = Some(name.to_string());
            if let Some(image) = images.iter().find(|image| **image == checked.image) {
                found.insert((image, name), checked);
            }
        }
    }
    // In the order asked, each image once per provider that matches it (a
    // report that says nothing of it is a failure), or once as no provider's.
    let mut images = Vec::new();
    for want in wanted {
        let mut checks: Vec<ImageCheck> = by_provider
            .iter()
            .filter(|(_, images)| images.contains(&want.image.as_str()))
            .map(|(provider, _)| {
                let name = provider.spec.name.as_str();
                found.get(&(want.image.as_str(), name)).cloned().unwrap_or_else(|| {
                    let error = format!("{name}'s report says nothing of this image");
                    let mut missing = ImageCheck::new(want.image.clone(), Verdict::Failed { error });
                    missing.provider = Some(name.to_string());
                    missing
                })
            })
            .collect();
        if checks.is_empty() {
            checks.push(ImageCheck::new(want.image.clone(), Verdict::NoProvider));
        }
        for mut check in checks {
            if let Some(used) = &want.used {
                check.used_by(used);
            }
            images.push(check);
        }
    }
    CheckRun::new(images)
}

/// One provider's `check` of `images`: what its report says of each, or why
/// there is none.
fn run_check(
    provider: &Provider,
    bin_dir: &Path,
    images: &[&str],
    service_account: &CheckServiceAccount,
    timeout: Duration,
) -> Vec<ImageCheck> {
    let spec = &provider.spec;
    let mut args = spec.args.clone();
    args.push("check".into());
    for image in images {
        args.extend(["--image".to_string(), image.to_string()]);
    }
    args.extend(["--output".to_string(), "json".to_string()]);
    // Another principal, evaluated by the provider's cloud; else what the
    // kubelet would send this provider of the pod's service account.
    if let Some(principal) = service_account.principals.get(&spec.name) {
        args.extend(["--as".to_string(), principal.clone()]);
    } else if let (Some(attributes), Some(token_file)) = (&spec.token_attributes, &service_account.token_file) {
        args.extend(["--service-account-token-file".to_string(), token_file.display().to_string()]);
        let keys = attributes
            .required_service_account_annotation_keys
            .iter()
            .chain(&attributes.optional_service_account_annotation_keys);
        for key in keys {
            if let Some(value) = service_account.annotations.get(key) {
                args.extend(["--service-account-annotation".to_string(), format!("{key}={value}")]);
            }
        }
    }
    let failed = |error: String| -> Vec<ImageCheck> {
        images.iter().map(|image| ImageCheck::new(*image, Verdict::Failed { error: error.clone() })).collect()
    };
    let exec = match run(&kubelet_config::plugin_path(bin_dir, &spec.name), &args, &spec.env, "", timeout) {
        Ok(exec) => exec,
        Err(e) => return failed(format!("{} could not be run: {e}", spec.name)),
    };
    if exec.timed_out {
        return failed(format!("{}'s check did not finish within {}s", spec.name, timeout.as_secs()));
    }
    match serde_json::from_str::<CheckRun>(&exec.stdout) {
        Ok(run) => run.images,
        Err(_) => {
            let why = exec.stderr.lines().last().unwrap_or("no report").to_string();
            failed(format!("{} exited {} without a report: {why}", spec.name, exit_code(exec.code)))
        }
    }
}

fn exit_code(code: Option<i32>) -> String {
    code.map_or_else(|| "on a signal".to_string(), |code| code.to_string())
}
