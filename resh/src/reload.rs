//! `resh reload`: asks a running resh to re-read its configuration file (`POST /reload` of the
//! admin API, the same as SIGHUP) and prints what changed and what needs a restart.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::error::FileError;
use crate::inject::{post, PostError};

/// `resh reload` arguments.
#[derive(Args, Debug, Clone)]
pub struct ReloadArgs {
    /// The admin API of the running resh.
    #[arg(long, env = "RESH_ADMIN", default_value = "http://127.0.0.1:9090", value_name = "URL")]
    pub admin: String,
    /// The admin bearer token (prefer the environment variable or --token-file: command lines
    /// are visible to other users).
    #[arg(long, env = "RESH_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the admin bearer token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
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
    fn token(&self) -> Result<Option<String>, FileError> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.trim().to_string())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim_end().to_string()))
                .map_err(FileError::on("read", path)),
            (None, None) => Ok(None),
        }
    }

    /// Sends `POST /reload`; returns the status code and the body.
    pub fn exchange(&self) -> Result<(u16, String), ReloadCommandError> {
        let token = self.token().map_err(ReloadCommandError::TokenFile)?;
        Ok(post(&self.admin, "/reload", token.as_deref(), "", Duration::from_secs(30))?)
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
