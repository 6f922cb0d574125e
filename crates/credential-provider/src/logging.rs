//! A run's standard streams, and how it ends: the scrubbed logger, the one
//! error line, the exit code, a panic that says nothing but where, the one
//! read of stdin and the one write of an answer to stdout.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::error::Error;
use crate::secret::{self, ScrubbingStderr};

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

/// Ends the process: exit 0, or the error as one scrubbed line on stderr and
/// its exit code (see [`crate::error`]).
pub fn exit(binary: &str, outcome: Result<(), Error>) -> ! {
    let code = match outcome {
        Ok(()) => 0,
        Err(error @ Error::AnsweredOnStdout { .. }) => error.exit_code(),
        Err(error) => {
            eprintln!("{binary}: error: {}", error_line(&error));
            error.exit_code()
        }
    };
    std::process::exit(code)
}

/// What an error says, on one line and scrubbed of every secret.
pub fn error_line(error: &Error) -> String {
    secret::scrub(&error.to_string()).replace(['\n', '\r'], " ")
}

/// Writes all of `text` to stdout at once, or fails.
pub fn write_stdout(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(Error::Output)
}

/// Reads stdin, where a request or a server URL arrives: at most one byte
/// more than `limit`, so that the caller sees a larger input and refuses it.
/// A terminal is refused with `nothing_piped` rather than waited on.
pub fn read_stdin(limit: usize, nothing_piped: &str) -> Result<Vec<u8>, Error> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Error::Usage(nothing_piped.to_string()));
    }
    let mut body = Vec::new();
    stdin
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Config(format!("cannot read stdin: {e}")))?;
    Ok(body)
}
