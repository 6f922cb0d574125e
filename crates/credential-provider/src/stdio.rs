//! A run's standard streams and how it ends: the one bounded read of stdin,
//! the one write of an answer to stdout, and the one scrubbed error line on
//! stderr with its exit code.

use crate::error::Error;
use crate::secret;

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
