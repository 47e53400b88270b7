//! What `vaultctl` itself says on stderr, in one place: errors, warnings
//! and informational lines, as text or, under `--json`, as one JSON object
//! per line (`{"error": {"code": …, "message": …}}`, `{"warning":
//! {"message": …}}`), so a script reading stderr under `--json` never meets
//! free text from vaultctl. `--quiet` drops the informational lines.

use serde_json::json;

use crate::error::CtlError;

/// How to speak: chosen once from `--json` and `--quiet`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    pub json: bool,
    pub quiet: bool,
}

impl Ui {
    /// A line that only informs ("stored X"): not under `--quiet`, and
    /// not under `--json`, where the command prints its result on stdout.
    pub fn info(&self, msg: &str) {
        if !self.quiet && !self.json {
            eprintln!("vaultctl: {msg}");
        }
    }

    /// A warning about a request that succeeded: always said.
    pub fn warn(&self, msg: &str) {
        if self.json {
            eprintln!("{}", json!({ "warning": { "message": msg } }));
        } else {
            eprintln!("vaultctl: warning: {msg}");
        }
    }

    /// The error that ends this invocation.
    pub fn error(&self, e: &CtlError) {
        self.failure(e.code(), &e.to_string());
    }

    /// A failure with its stable code: `usage`, a daemon error code such
    /// as `not-found` or `permission-denied`, `unavailable`, `timeout`,
    /// `connection-lost`, a run's end reason, …
    pub fn failure(&self, code: &str, msg: &str) {
        if self.json {
            eprintln!("{}", error_json(code, msg));
        } else {
            eprintln!("vaultctl: {msg}");
        }
    }
}

/// `{"error": {"code": …, "message": …}}`.
pub fn error_json(code: &str, msg: &str) -> serde_json::Value {
    json!({ "error": { "code": code, "message": msg } })
}

/// Whether the command line asks for `--json` before any `--` (after which
/// the words belong to the command `run` runs): for errors found while the
/// command line itself is parsed.
pub fn asks_for_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// One JSON value on stdout, on one line.
pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_asked_for_only_before_the_command() {
        let a = |v: &[&str]| asks_for_json(v.iter().map(std::ffi::OsString::from));
        assert!(a(&["vaultctl", "--json", "status"]));
        assert!(a(&["vaultctl", "secrets", "list", "--json"]));
        assert!(!a(&["vaultctl", "status"]));
        assert!(!a(&["vaultctl", "run", "--", "tool", "--json"]));
        assert!(!a(&["--json"]), "the program name is not an argument");
    }

    #[test]
    fn errors_have_one_shape() {
        let v = error_json("usage", "bad flag");
        assert_eq!(v["error"]["code"], "usage");
        assert_eq!(v["error"]["message"], "bad flag");
    }
}
