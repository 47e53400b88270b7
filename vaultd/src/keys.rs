//! Key providers and the key-encryption key ([`Kek`]).
//!
//! A [`KeyProviderSpec`] names where the KEK comes from:
//! * `file:PATH` — a root-only file holding 32 raw bytes or 64 hex digits;
//! * `systemd-creds:NAME` — the same, read from `$CREDENTIALS_DIRECTORY/NAME`
//!   (`LoadCredentialEncrypted=`, sealed to the TPM or the host key);
//! * `passphrase` — derived with Argon2id ([`kek_from_passphrase`]) when root
//!   unlocks the vault; until then the daemon is sealed.
//!
//! Key bytes live only in [`Zeroizing`] buffers and never appear in errors.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secure_fs::{self, SecureFsError};

/// Length of the KEK in bytes.
pub const KEK_LEN: usize = 32;
/// Environment variable systemd sets for services with credentials.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Largest Argon2 memory cost a vault file may ask for (4 GiB): a bound on
/// what a damaged header can make the daemon allocate.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key provider {0:?}: expected file:/ABSOLUTE/PATH, systemd-creds:NAME or passphrase")]
    InvalidSpec(String),
    #[error("key file {} is not trusted: {source}", path.display())]
    Insecure {
        path: PathBuf,
        source: SecureFsError,
    },
    #[error("cannot open key file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("key file {} changed while it was being opened", path.display())]
    Replaced { path: PathBuf },
    #[error("key file {} is readable by group or others (mode {mode:o}); chmod 600 it", path.display())]
    Readable { path: PathBuf, mode: u32 },
    #[error("cannot read key file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("key file {} must hold exactly 32 raw bytes or 64 hex digits", path.display())]
    BadKey { path: PathBuf },
    #[error(
        "${CREDENTIALS_ENV} is not set; run aivaultd under systemd with LoadCredentialEncrypted="
    )]
    NoCredentialsDirectory,
    #[error("invalid credential name {0:?}")]
    BadCredentialName(String),
    #[error("key file {} has no existing parent directory", path.display())]
    NoParentDir { path: PathBuf },
    #[error("key file {} already exists; refusing to overwrite it", path.display())]
    KeyFileExists { path: PathBuf },
    #[error("cannot write key file {}: {source}", path.display())]
    WriteKeyFile {
        path: PathBuf,
        source: SecureFsError,
    },
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("key-derivation parameters are out of range")]
    KdfOutOfRange,
    #[error("key derivation failed: {0}")]
    Kdf(argon2::Error),
}

/// The key-encryption key. Wiped on drop; `Debug` shows nothing.
pub struct Kek(Zeroizing<[u8; KEK_LEN]>);

impl Kek {
    /// Wraps key bytes. The caller should wipe its own copy.
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key (tests, and callers that store it themselves).
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; KEK_LEN]);
        getrandom::getrandom(&mut key[..]).map_err(KeyError::Random)?;
        Ok(Self(key))
    }

    pub fn as_bytes(&self) -> &[u8; KEK_LEN] {
        &self.0
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(..)")
    }
}

/// Where the KEK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProviderSpec {
    File(PathBuf),
    SystemdCreds(String),
    Passphrase,
}

impl KeyProviderSpec {
    /// The provider's name as recorded in the vault header.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::SystemdCreds(_) => "systemd-creds",
            Self::Passphrase => "passphrase",
        }
    }
}

fn valid_credential_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".." && !name.contains('\0')
}

impl FromStr for KeyProviderSpec {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyError::InvalidSpec(s.to_string());
        if s == "passphrase" {
            return Ok(Self::Passphrase);
        }
        if let Some(path) = s.strip_prefix("file:") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(bad());
            }
            return Ok(Self::File(path.into()));
        }
        if let Some(name) = s.strip_prefix("systemd-creds:") {
            if !valid_credential_name(name) {
                return Err(bad());
            }
            return Ok(Self::SystemdCreds(name.into()));
        }
        Err(bad())
    }
}

impl fmt::Display for KeyProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::SystemdCreds(n) => write!(f, "systemd-creds:{n}"),
            Self::Passphrase => f.write_str("passphrase"),
        }
    }
}

/// Loads the KEK. `Ok(None)` for the passphrase provider: the daemon starts
/// sealed and waits for root to unlock it.
pub fn load_kek(spec: &KeyProviderSpec) -> Result<Option<Kek>, KeyError> {
    match spec {
        KeyProviderSpec::File(path) => read_key(path, true).map(Some),
        KeyProviderSpec::SystemdCreds(name) => {
            if !valid_credential_name(name) {
                return Err(KeyError::BadCredentialName(name.clone()));
            }
            let dir = std::env::var_os(CREDENTIALS_ENV).ok_or(KeyError::NoCredentialsDirectory)?;
            read_key(&Path::new(&dir).join(name), false).map(Some)
        }
        KeyProviderSpec::Passphrase => Ok(None),
    }
}

/// Reads a key from a trusted file. `private` also demands that group and
/// others cannot read it (systemd manages its credential files' modes).
fn read_key(path: &Path, private: bool) -> Result<Kek, KeyError> {
    secure_fs::check_secure_file(path).map_err(|source| KeyError::Insecure {
        path: path.into(),
        source,
    })?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| KeyError::Open {
            path: path.into(),
            source,
        })?;
    // Re-check what was actually opened, so a swap after the path check
    // cannot slip in another file.
    let meta = file.metadata().map_err(|source| KeyError::Open {
        path: path.into(),
        source,
    })?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(KeyError::Replaced { path: path.into() });
    }
    if private && meta.mode() & 0o077 != 0 {
        return Err(KeyError::Readable {
            path: path.into(),
            mode: meta.mode() & 0o7777,
        });
    }
    let contents = read_capped(file, 2 * KEK_LEN + 2).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    parse_key(&contents).ok_or_else(|| KeyError::BadKey { path: path.into() })
}

fn read_capped(file: File, cap: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(cap + 1));
    file.take(cap as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// 32 raw bytes, or 64 hex digits optionally followed by one newline.
fn parse_key(contents: &[u8]) -> Option<Kek> {
    if contents.len() == KEK_LEN {
        let mut key = Zeroizing::new([0u8; KEK_LEN]);
        key.copy_from_slice(contents);
        return Some(Kek(key));
    }
    let hex = contents.strip_suffix(b"\n").unwrap_or(contents);
    if hex.len() != 2 * KEK_LEN {
        return None;
    }
    let mut key = Zeroizing::new([0u8; KEK_LEN]);
    for (out, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        *out = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(Kek(key))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Creates a new key file of 32 random bytes, mode `0600`. Refuses to
/// overwrite an existing file; the file appears complete or not at all.
pub fn generate_key_file(path: &Path) -> Result<(), KeyError> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() || p.is_dir() => {}
        _ => return Err(KeyError::NoParentDir { path: path.into() }),
    }
    let key = Kek::generate()?;
    secure_fs::atomic_create(path, &key.0[..], 0o600).map_err(|source| match source {
        SecureFsError::Exists { .. } => KeyError::KeyFileExists { path: path.into() },
        source => KeyError::WriteKeyFile {
            path: path.into(),
            source,
        },
    })
}

/// Argon2id parameters for the passphrase provider, stored in the vault
/// header so the daemon can derive the KEK again at unlock.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KdfParams {
    pub salt: [u8; 16],
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfParams {
    /// Production parameters with a fresh salt: 64 MiB, 3 passes, 1 lane.
    pub fn generate() -> Result<Self, KeyError> {
        Self::with_costs(64 * 1024, 3, 1)
    }

    /// Cheap parameters for tests: 8 MiB, 1 pass, 1 lane.
    pub fn generate_fast() -> Result<Self, KeyError> {
        Self::with_costs(8 * 1024, 1, 1)
    }

    fn with_costs(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, KeyError> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(KeyError::Random)?;
        Ok(Self {
            salt,
            m_cost_kib,
            t_cost,
            p_cost,
        })
    }
}

/// Derives the KEK from a passphrase with Argon2id.
pub fn kek_from_passphrase(passphrase: &[u8], params: &KdfParams) -> Result<Kek, KeyError> {
    if params.m_cost_kib > MAX_M_COST_KIB
        || !(1..=MAX_T_COST).contains(&params.t_cost)
        || !(1..=MAX_P_COST).contains(&params.p_cost)
    {
        return Err(KeyError::KdfOutOfRange);
    }
    let argon_params = argon2::Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEK_LEN),
    )
    .map_err(|_| KeyError::KdfOutOfRange)?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut key = Zeroizing::new([0u8; KEK_LEN]);
    argon
        .hash_password_into(passphrase, &params.salt, &mut key[..])
        .map_err(KeyError::Kdf)?;
    Ok(Kek(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("keys")
            .tempdir_in("/tmp")
            .unwrap()
    }

    /// These tests check ownership rules that only root can set up; they
    /// fail, not pass, when run as another user (the suite runs as root).
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it creates files owned by other users"
        );
    }

    fn write_mode(p: &Path, bytes: &[u8], mode: u32) {
        fs::write(p, bytes).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn spec_parses_and_displays_round_trip() {
        for s in [
            "file:/etc/aivault/kek",
            "systemd-creds:aivault.kek",
            "passphrase",
        ] {
            let spec: KeyProviderSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!(
            "file:/k".parse::<KeyProviderSpec>().unwrap(),
            KeyProviderSpec::File("/k".into())
        );
        assert_eq!("file:/k".parse::<KeyProviderSpec>().unwrap().kind(), "file");
        assert_eq!(
            KeyProviderSpec::SystemdCreds("x".into()).kind(),
            "systemd-creds"
        );
        assert_eq!(KeyProviderSpec::Passphrase.kind(), "passphrase");
        for bad in [
            "",
            "file:",
            "file:rel/path",
            "systemd-creds:",
            "systemd-creds:a/b",
            "systemd-creds:..",
            "tpm",
            "Passphrase",
        ] {
            let e = bad.parse::<KeyProviderSpec>().unwrap_err();
            assert!(
                e.to_string().starts_with("invalid key provider"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn kek_debug_hides_bytes() {
        let k = Kek::from_bytes([0xab; 32]);
        assert_eq!(format!("{k:?}"), "Kek(..)");
    }

    #[test]
    fn key_contents_raw_and_hex() {
        let raw = [7u8; 32];
        assert_eq!(parse_key(&raw).unwrap().as_bytes(), &raw);
        let hex: String = (0u8..32).map(|b| format!("{b:02x}")).collect();
        let want: Vec<u8> = (0u8..32).collect();
        assert_eq!(
            &parse_key(hex.as_bytes()).unwrap().as_bytes()[..],
            &want[..]
        );
        assert_eq!(
            &parse_key(format!("{}\n", hex.to_uppercase()).as_bytes())
                .unwrap()
                .as_bytes()[..],
            &want[..]
        );
        assert!(parse_key(&[7u8; 31]).is_none());
        assert!(parse_key(&[7u8; 33]).is_none());
        assert!(parse_key(format!("{hex}\n\n").as_bytes()).is_none());
        assert!(parse_key(format!("{}zz", &hex[..62]).as_bytes()).is_none());
        assert!(parse_key(b"").is_none());
    }

    #[test]
    fn file_provider_loads_and_checks_permissions() {
        require_root();
        let dir = tempdir();
        let p = dir.path().join("kek");
        write_mode(&p, &[9u8; 32], 0o600);
        let spec = KeyProviderSpec::File(p.clone());
        assert_eq!(load_kek(&spec).unwrap().unwrap().as_bytes(), &[9u8; 32]);

        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(load_kek(&spec), Err(KeyError::Readable { .. })));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o620)).unwrap();
        assert!(matches!(load_kek(&spec), Err(KeyError::Insecure { .. })));

        write_mode(&p, b"not a key", 0o600);
        let e = load_kek(&spec).unwrap_err();
        assert!(matches!(e, KeyError::BadKey { .. }));
        assert!(!e.to_string().contains("not a key"));

        write_mode(&p, &vec![b'a'; 10_000], 0o600);
        assert!(matches!(load_kek(&spec), Err(KeyError::BadKey { .. })));

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(
            load_kek(&KeyProviderSpec::File(link)),
            Err(KeyError::Insecure { .. })
        ));
    }

    // The only test that touches $CREDENTIALS_DIRECTORY, so no other test
    // races with it.
    #[test]
    fn systemd_creds_provider_reads_credentials_directory() {
        require_root();
        let dir = tempdir();
        let hex = "00".repeat(31) + "ff\n";
        write_mode(&dir.path().join("aivault.kek"), hex.as_bytes(), 0o400);
        let spec = KeyProviderSpec::SystemdCreds("aivault.kek".into());
        std::env::remove_var(CREDENTIALS_ENV);
        assert!(matches!(
            load_kek(&spec),
            Err(KeyError::NoCredentialsDirectory)
        ));
        std::env::set_var(CREDENTIALS_ENV, dir.path());
        let k = load_kek(&spec).unwrap().unwrap();
        assert_eq!(k.as_bytes()[31], 0xff);
        assert!(matches!(
            load_kek(&KeyProviderSpec::SystemdCreds("../x".into())),
            Err(KeyError::BadCredentialName(_))
        ));
        assert!(matches!(
            load_kek(&KeyProviderSpec::SystemdCreds("missing".into())),
            Err(KeyError::Insecure { .. })
        ));
        std::env::remove_var(CREDENTIALS_ENV);
    }

    #[test]
    fn passphrase_provider_starts_sealed() {
        assert!(load_kek(&KeyProviderSpec::Passphrase).unwrap().is_none());
    }

    #[test]
    fn generated_key_file_is_private_loadable_and_never_overwritten() {
        let dir = tempdir();
        let p = dir.path().join("kek");
        generate_key_file(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.len(), 32);
        let first = fs::read(&p).unwrap();
        assert!(matches!(
            generate_key_file(&p),
            Err(KeyError::KeyFileExists { .. })
        ));
        assert_eq!(fs::read(&p).unwrap(), first);
        assert!(matches!(
            generate_key_file(&dir.path().join("nodir/kek")),
            Err(KeyError::NoParentDir { .. })
        ));
        // Loading checks the file is root's (it is: the suite runs as root).
        require_root();
        let k = load_kek(&KeyProviderSpec::File(p)).unwrap().unwrap();
        assert_eq!(&k.as_bytes()[..], &first[..]);
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let params = KdfParams::generate_fast().unwrap();
        let a = kek_from_passphrase(b"correct horse", &params).unwrap();
        let b = kek_from_passphrase(b"correct horse", &params).unwrap();
        let c = kek_from_passphrase(b"wrong horse", &params).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), c.as_bytes());
        let other = KdfParams::generate_fast().unwrap();
        assert_ne!(other.salt, params.salt);
        assert_ne!(
            kek_from_passphrase(b"correct horse", &other)
                .unwrap()
                .as_bytes(),
            a.as_bytes()
        );
        let defaults = KdfParams::generate().unwrap();
        assert_eq!(
            (defaults.m_cost_kib, defaults.t_cost, defaults.p_cost),
            (65536, 3, 1)
        );
    }

    #[test]
    fn hostile_kdf_params_are_refused_without_panicking() {
        let base = KdfParams::generate_fast().unwrap();
        for (m, t, p) in [
            (u32::MAX, 1, 1),
            (8192, 0, 1),
            (8192, 1, 0),
            (8192, 1000, 1),
            (0, 1, 1),
            (8192, 1, 17),
        ] {
            let params = KdfParams {
                m_cost_kib: m,
                t_cost: t,
                p_cost: p,
                ..base.clone()
            };
            assert!(
                matches!(
                    kek_from_passphrase(b"x", &params),
                    Err(KeyError::KdfOutOfRange)
                ),
                "{m} {t} {p}"
            );
        }
    }

    #[test]
    fn kdf_params_round_trip_through_postcard() {
        let p = KdfParams::generate_fast().unwrap();
        let bytes = postcard::to_allocvec(&p).unwrap();
        assert_eq!(postcard::from_bytes::<KdfParams>(&bytes).unwrap(), p);
    }
}
