//! The real upstream MCP servers `scripts/gateway-deps.sh` installs, as the
//! daemon's policy runs them: `@modelcontextprotocol/server-everything`
//! (npm, on the machine's node) and the gateway's fixture server written
//! with the official Python SDK (`gateway/tests/fixtures/pyserver.py`),
//! run by Debian's `/usr/bin/python3` with the SDK's venv on its path.
//!
//! Shared by the gateway's acceptance tests and its benchmark, so both
//! drive the same servers the same way.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const EVERYTHING: &str = "node/node_modules/@modelcontextprotocol/server-everything/dist/index.js";

/// The installed servers, and a directory any uid may read holding the
/// Python server's launcher.
#[derive(Debug)]
pub struct RealUpstreams {
    deps: PathBuf,
    node: PathBuf,
    launcher_dir: PathBuf,
}

/// A command line: program and arguments.
pub type CommandLine = (PathBuf, Vec<String>);

impl RealUpstreams {
    /// Installs the servers if missing (a failing installer fails the
    /// caller) and writes the launcher under a fresh directory named by
    /// `tag`.
    pub fn install(tag: &str) -> RealUpstreams {
        let deps = crate::install_deps("gateway-deps.sh");
        let node = std::fs::canonicalize(deps.join("node-bin"))
            .unwrap_or_else(|e| panic!("node (from scripts/gateway-deps.sh): {e}"));
        for need in [EVERYTHING, "venv/bin/python"] {
            assert!(
                deps.join(need).exists(),
                "{need} is missing from {}: scripts/gateway-deps.sh installs it",
                deps.display()
            );
        }
        let site = std::fs::read_dir(deps.join("venv/lib"))
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("site-packages"))
            .find(|p| p.join("mcp").is_dir())
            .unwrap_or_else(|| panic!("no site-packages with `mcp` under {}", deps.display()));
        let launcher_dir =
            std::env::temp_dir().join(format!("aivt-real-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&launcher_dir);
        std::fs::create_dir_all(&launcher_dir).unwrap_or_else(|e| panic!("launcher dir: {e}"));
        std::fs::set_permissions(&launcher_dir, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("launcher dir: {e}"));
        let launcher = launcher_dir.join("pyserver.py");
        // Rust's debug quoting of a path is a valid Python string literal
        // (quotes and backslashes escaped alike).
        std::fs::write(
            &launcher,
            format!(
                "import runpy, sys\nsys.path.insert(0, {site:?})\nsys.argv = [{server:?}]\n\
                 runpy.run_path({server:?}, run_name=\"__main__\")\n",
                site = site.display().to_string(),
                server = Self::pyserver().display().to_string(),
            ),
        )
        .unwrap_or_else(|e| panic!("launcher: {e}"));
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("launcher: {e}"));
        RealUpstreams {
            deps,
            node,
            launcher_dir,
        }
    }

    fn pyserver() -> PathBuf {
        crate::bus::repo().join("gateway/tests/fixtures/pyserver.py")
    }

    /// The venv's Python, which holds the official SDK (for clients).
    pub fn venv_python(&self) -> PathBuf {
        self.deps.join("venv/bin/python")
    }

    /// `server-everything` on stdio.
    pub fn everything(&self) -> CommandLine {
        (
            self.node.clone(),
            vec![
                self.deps.join(EVERYTHING).display().to_string(),
                "stdio".into(),
            ],
        )
    }

    /// The Python SDK server on stdio.
    pub fn python(&self) -> CommandLine {
        (
            PathBuf::from("/usr/bin/python3"),
            vec![self.launcher_dir.join("pyserver.py").display().to_string()],
        )
    }

    /// An `[[mcp_server]]` entry named `name` running `line` for `user`,
    /// reading the installed servers, with `tools` as the body of its
    /// `[mcp_server.tools]` table (`allow = [...]` and the rest).
    pub fn policy(&self, name: &str, line: &CommandLine, user: &str, tools: &str) -> String {
        let fixtures = Self::pyserver();
        let fixtures = fixtures.parent().unwrap_or(Path::new("/"));
        let args: Vec<String> = line.1.iter().map(|a| format!("{a:?}")).collect();
        format!(
            r#"
[[mcp_server]]
name = "{name}"
command = "{command}"
args = [{args}]
users = ["{user}"]
[mcp_server.sandbox]
read = ["{deps}", "{fixtures}", "{launcher}"]
memory = "4GiB"
[mcp_server.tools]
{tools}
"#,
            command = line.0.display(),
            args = args.join(", "),
            deps = self.deps.display(),
            fixtures = fixtures.display(),
            launcher = self.launcher_dir.display(),
        )
    }
}

impl Drop for RealUpstreams {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.launcher_dir);
    }
}
