//! Credentials at rest: passwords are sealed with AES-256-GCM under the fleet's key
//! (`MAILSHIFT_SECRET_KEY`, 32 bytes in base64, or a file holding it) before they reach
//! the database, and opened only in the worker or scheduler that needs them.
//! A sealed value is `v2:` + base64(nonce || ciphertext+tag), sealed with the place it is
//! stored in (e.g. `mailbox/<migration id>/dest`) as associated data: copied into another
//! row or column, it no longer opens. Values sealed before that (`v1:`, no associated
//! data) still open wherever they are, until the row is written again. The key never is
//! stored.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

/// What can go wrong with the key or a sealed value. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no secret key: set MAILSHIFT_SECRET_KEY (or --secret-key-file) to 32 random bytes \
         in base64; create one with `mailshift db new-key`"
    )]
    Missing,
    #[error(
        "the secret key is not 32 bytes of base64 ({0}); create one with `mailshift db new-key`"
    )]
    BadKey(String),
    #[error("a stored credential cannot be opened with this key (wrong key, or corrupt data)")]
    Open,
}

/// The fleet's sealing key.
#[derive(Clone)]
pub struct SecretKey(Key<Aes256Gcm>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    /// Parses a base64 key (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<SecretKey, SecretError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| SecretError::BadKey(e.to_string()))?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::BadKey(format!("{} bytes", bytes.len())))?;
        Ok(SecretKey(Key::<Aes256Gcm>::from(arr)))
    }

    /// A new random key, base64.
    pub fn generate() -> String {
        STANDARD.encode(Aes256Gcm::generate_key(OsRng))
    }

    /// Seals `secret` for the place named by `binding` (a row and column).
    pub fn seal(&self, secret: &SecretString, binding: &str) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret.expose_secret().as_bytes(),
            aad: binding.as_bytes(),
        };
        // Encrypting into a Vec cannot fail for inputs of any realistic size.
        let ct = cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("v2:{}", STANDARD.encode(out))
    }

    /// Opens a value sealed for `binding`; a value sealed for another place fails as a
    /// wrong key would.
    pub fn open(&self, sealed: &str, binding: &str) -> Result<SecretString, SecretError> {
        let (raw, aad) = if let Some(b) = sealed.strip_prefix("v2:") {
            (b, binding.as_bytes())
        } else if let Some(b) = sealed.strip_prefix("v1:") {
            (b, &[][..])
        } else {
            return Err(SecretError::Open);
        };
        let raw = STANDARD.decode(raw).map_err(|_| SecretError::Open)?;
        if raw.len() < 12 + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretError::Open)?;
        let plain = Aes256Gcm::new(&self.0)
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Open)
    }
}

/// Where a mailbox's password is stored: `side` is `source` or `dest`.
pub fn mailbox_binding(migration: uuid::Uuid, side: &str) -> String {
    format!("mailbox/{migration}/{side}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_plaintext() {
        let key = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        let sealed = key.seal(&SecretString::from("hunter2-very-secret"), "row/1");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            key.open(&sealed, "row/1").unwrap().expose_secret(),
            "hunter2-very-secret"
        );
        let other = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        assert!(other.open(&sealed, "row/1").is_err());
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn a_value_copied_to_another_row_does_not_open() {
        let key = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let sealed = key.seal(&SecretString::from("pw"), &mailbox_binding(a, "dest"));
        assert!(key.open(&sealed, &mailbox_binding(a, "dest")).is_ok());
        assert!(key.open(&sealed, &mailbox_binding(b, "dest")).is_err());
        assert!(key.open(&sealed, &mailbox_binding(a, "source")).is_err());
    }

    #[test]
    fn values_sealed_before_binding_still_open() {
        let key = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        let cipher = Aes256Gcm::new(&key.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut raw = nonce.to_vec();
        raw.extend(cipher.encrypt(&nonce, b"old".as_ref()).unwrap());
        let legacy = format!("v1:{}", STANDARD.encode(raw));
        assert_eq!(
            key.open(&legacy, "anything").unwrap().expose_secret(),
            "old"
        );
    }
}
