//! The command line of the node tools (`kubelet-simulator`,
//! `credential-provider-install`), with the workspace's exit codes.

use std::process::ExitCode;

/// Parses this process's arguments into `C`: a command-line error exits 1,
/// as every binary of the workspace does (clap's own exit code is 2), and
/// `--help` or `--version` exits 0 once printed.
pub fn parse<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS }
    })
}
