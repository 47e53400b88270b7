//! Sealing the data key and values with XChaCha20-Poly1305.
//!
//! Every ciphertext gets a fresh random 192-bit nonce and associated data
//! that names exactly what it is, so a ciphertext moved anywhere else — to
//! another record, scope, version, DEK generation or vault — fails to open:
//! * DEK: `"aivault dek v1" ‖ vault_id ‖ dek_generation (u64 BE)`;
//! * value: `"aivault value v1" ‖ vault_id ‖ dek_generation (u64 BE) ‖
//!   scope ‖ name length (u64 BE) ‖ name ‖ version (u64 BE)`, where scope is
//!   `0x01 ‖ uid (u32 BE)` for a user and `0x02` for the system.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use zeroize::Zeroizing;

use super::format::Sealed;
use super::{Scope, StoreError};

/// Length of the DEK and the KEK.
pub(super) const KEY_LEN: usize = 32;
pub(super) type Key = Zeroizing<[u8; KEY_LEN]>;

const DEK_DOMAIN: &[u8] = b"aivault dek v1";
const VALUE_DOMAIN: &[u8] = b"aivault value v1";

/// Fills a buffer from the OS random source.
pub(super) fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(StoreError::Random)?;
    Ok(out)
}

pub(super) fn random_key() -> Result<Key, StoreError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::getrandom(&mut key[..]).map_err(StoreError::Random)?;
    Ok(key)
}

pub(super) fn dek_aad(vault_id: &[u8; 16], generation: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_DOMAIN.len() + 24);
    aad.extend_from_slice(DEK_DOMAIN);
    aad.extend_from_slice(vault_id);
    aad.extend_from_slice(&generation.to_be_bytes());
    aad
}

pub(super) fn value_aad(
    vault_id: &[u8; 16],
    generation: u64,
    scope: Scope,
    name: &str,
    version: u64,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(VALUE_DOMAIN.len() + 40 + name.len());
    aad.extend_from_slice(VALUE_DOMAIN);
    aad.extend_from_slice(vault_id);
    aad.extend_from_slice(&generation.to_be_bytes());
    match scope {
        Scope::User(uid) => {
            aad.push(0x01);
            aad.extend_from_slice(&uid.to_be_bytes());
        }
        Scope::System => aad.push(0x02),
    }
    // The name's length as u64, so the encoding is unambiguous whatever a
    // file holds (validated names are at most 128 bytes).
    aad.extend_from_slice(&(name.len() as u64).to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Seals `plaintext` under `key` with a fresh random nonce.
pub(super) fn seal(
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Sealed, StoreError> {
    let nonce: [u8; 24] = random()?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let ciphertext = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| StoreError::Seal)?;
    Ok(Sealed { nonce, ciphertext })
}

/// Opens a sealed box; `None` if it fails authentication (wrong key, wrong
/// associated data, or modified bytes — deliberately indistinguishable).
pub(super) fn open(key: &[u8; KEY_LEN], sealed: &Sealed, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            (&sealed.nonce).into(),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Seals the DEK under the KEK.
pub(super) fn wrap_dek(
    kek: &[u8; KEY_LEN],
    dek: &[u8; KEY_LEN],
    vault_id: &[u8; 16],
    generation: u64,
) -> Result<Sealed, StoreError> {
    seal(kek, dek, &dek_aad(vault_id, generation))
}

/// Opens the DEK; [`StoreError::WrongKey`] if the KEK does not open it.
pub(super) fn unwrap_dek(
    kek: &[u8; KEY_LEN],
    wrapped: &Sealed,
    vault_id: &[u8; 16],
    generation: u64,
) -> Result<Key, StoreError> {
    let plain = open(kek, wrapped, &dek_aad(vault_id, generation)).ok_or(StoreError::WrongKey)?;
    let mut dek = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(StoreError::Corrupt(
            "the data key has the wrong length".into(),
        ));
    }
    dek.copy_from_slice(&plain);
    Ok(dek)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let key = random_key().unwrap();
        let s = seal(&key, b"hello", b"aad").unwrap();
        assert_eq!(&open(&key, &s, b"aad").unwrap()[..], b"hello");
        assert!(open(&key, &s, b"aae").is_none());
        let other = random_key().unwrap();
        assert!(open(&other, &s, b"aad").is_none());
        let mut flipped = s.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(open(&key, &flipped, b"aad").is_none());
        let mut short = s;
        short.ciphertext.truncate(3);
        assert!(open(&key, &short, b"aad").is_none());
    }

    #[test]
    fn value_aad_separates_every_field() {
        let id = [1u8; 16];
        let base = value_aad(&id, 1, Scope::User(5), "A", 1);
        assert_ne!(base, value_aad(&[2u8; 16], 1, Scope::User(5), "A", 1));
        assert_ne!(base, value_aad(&id, 2, Scope::User(5), "A", 1));
        assert_ne!(base, value_aad(&id, 1, Scope::User(6), "A", 1));
        assert_ne!(base, value_aad(&id, 1, Scope::System, "A", 1));
        assert_ne!(base, value_aad(&id, 1, Scope::User(5), "B", 1));
        assert_ne!(base, value_aad(&id, 1, Scope::User(5), "A", 2));
        assert_ne!(base, dek_aad(&id, 1));
    }
}
