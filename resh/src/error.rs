//! Errors the tools share.
use std::io;
use std::path::{Path, PathBuf};

/// A file or directory that could not be made, read or written: the system's error, on a
/// path resh chose or the user gave.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {}: {error}", .path.display())]
pub struct FileError {
    /// What was being done: `create`, `read`, `write`.
    pub what: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub error: io::Error,
}

impl FileError {
    /// For `map_err`: `std::fs::write(&path, text).map_err(FileError::on("write", &path))`.
    pub fn on(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
        let path = path.to_path_buf();
        move |error| FileError { what, path, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_action_and_the_path() {
        let e = std::fs::read_to_string("/nonexistent/x").map_err(FileError::on("read", Path::new("/nonexistent/x")));
        let text = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.starts_with("cannot read /nonexistent/x: "), "{text}");
    }
}
