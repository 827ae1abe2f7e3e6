//! `resh reload`: asks a running resh to re-read its configuration file (`POST /reload` of the
//! admin API, the same as SIGHUP) and prints what changed and what needs a restart.
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::error::FileError;
use crate::inject::{post, AdminAccess, PostError};

/// `resh reload` arguments.
#[derive(Args, Debug, Clone)]
pub struct ReloadArgs {
    /// Where the admin API is, and its token.
    #[command(flatten)]
    pub access: AdminAccess,
}

/// Why `resh reload` got no answer from resh.
#[derive(Debug, thiserror::Error)]
pub enum ReloadCommandError {
    /// The user's `--token-file` cannot be read.
    #[error("--token-file: {0}")]
    TokenFile(#[source] FileError),
    /// The exchange with the admin API failed.
    #[error(transparent)]
    Post(#[from] PostError),
}

impl ReloadArgs {
    /// Sends `POST /reload`; returns the status code and the body.
    pub fn exchange(&self) -> Result<(u16, String), ReloadCommandError> {
        let token = self.access.token().map_err(ReloadCommandError::TokenFile)?;
        Ok(post(&self.access.admin, "/reload", token.as_deref(), "", Duration::from_secs(30))?)
    }
}

/// Runs `resh reload`: prints resh's report on standard output, or the reason on standard
/// error (exit 1 when resh refused the file, 2 when it could not be asked).
pub fn main(args: &ReloadArgs) -> ExitCode {
    match args.exchange() {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("resh reload: HTTP {status}: {}", body.trim_end());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("resh reload: {e}");
            ExitCode::from(2)
        }
    }
}
