//! What a run says on stderr while it works: the scrubbed logger, at the
//! verbosity asked for, and a panic that says nothing but where.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::secret::ScrubbingStderr;

/// A panic message may quote data (a token, a request): print only where it
/// happened.
pub fn install_panic_hook(binary: String) {
    std::panic::set_hook(Box::new(move |info| {
        let place = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!("{binary}: internal error{place}; please report it");
    }));
}

/// Logs to stderr through the secret scrubber. Our crates log at the level
/// asked for (`-v` info, `-vv` debug, `-vvv` trace; warnings always); the
/// SDKs and HTTP stacks stay quieter, since their warnings repeat what our
/// one error line says with debug dumps attached.
pub fn init(verbose: u8, binary: &str) {
    let ours = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let theirs = match verbose {
        0 => LevelFilter::ERROR,
        1 | 2 => LevelFilter::WARN,
        _ => LevelFilter::DEBUG,
    };
    let filter = Targets::new()
        .with_default(theirs)
        .with_target("credential_provider", ours)
        .with_target(binary.replace('-', "_"), ours);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| ScrubbingStderr)
        .with_ansi(false)
        .with_target(verbose >= 2)
        .without_time()
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
