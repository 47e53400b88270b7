//! A private `dbus-daemon` set up like the system bus
//! (`tests/dbus/system-like.conf.in`: default deny), loading the bus policy
//! file the package ships (`packaging/dbus/`) straight from the source tree.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// A running private bus; killed on drop.
#[derive(Debug)]
pub struct Bus {
    _dir: tempfile::TempDir,
    child: Child,
    /// The bus's address, for `DBUS_SYSTEM_BUS_ADDRESS` and `[dbus] bus`.
    pub address: String,
}

impl Bus {
    /// Starts the bus (`dbus-daemon` must be installed:
    /// `scripts/dbus-deps.sh` does it) and waits for its address.
    pub fn start() -> Bus {
        crate::require_root();
        let dir = tempfile::Builder::new()
            .prefix("aivault-bus-")
            .tempdir()
            .expect("tempdir");
        // Unprivileged callers must reach the socket.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let socket = dir.path().join("system_bus_socket");
        let conf = dir.path().join("bus.conf");
        let template = fs::read_to_string(repo().join("tests/dbus/system-like.conf.in"))
            .expect("tests/dbus/system-like.conf.in");
        let policy = repo().join("packaging/dbus/org.aivault.Vault1.conf");
        fs::write(
            &conf,
            template
                .replace("@SOCKET@", &socket.display().to_string())
                .replace("@POLICY@", &policy.display().to_string()),
        )
        .expect("bus.conf");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (scripts/dbus-deps.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("dbus-daemon prints its address");
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Bus {
            _dir: dir,
            child,
            address,
        }
    }

    /// The `[dbus]` table pointing a test daemon at this bus.
    pub fn daemon_config(&self) -> String {
        format!("[dbus]\nbus = \"{}\"\n", self.address)
    }

    /// Waits (bounded) until `name` has an owner on this bus.
    pub fn wait_for_name(&self, name: &str, daemon: &crate::Daemon) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let out = Command::new("busctl")
                .arg(format!("--address={}", self.address))
                .args([
                    "call",
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameHasOwner",
                    "s",
                    name,
                ])
                .output()
                .expect("busctl");
            if String::from_utf8_lossy(&out.stdout).trim() == "b true" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never got an owner; daemon output:\n{}",
                fs::read_to_string(daemon.output_log()).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Bus {
    /// Kills the bus daemon now (as a crash of the bus would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
