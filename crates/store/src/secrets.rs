//! Credentials at rest: passwords are sealed with AES-256-GCM under the fleet's key
//! (`MAILSHIFT_SECRET_KEY`, 32 bytes in base64, or a file holding it) before they reach
//! the database, and opened only in the worker or scheduler that needs them.
//! A sealed value is `v1:` + base64(nonce || ciphertext+tag); the key never is stored.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
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

    pub fn seal(&self, secret: &SecretString) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encrypting into a Vec cannot fail for inputs of any realistic size.
        let ct = cipher
            .encrypt(&nonce, secret.expose_secret().as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("v1:{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, SecretError> {
        let raw = sealed
            .strip_prefix("v1:")
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or(SecretError::Open)?;
        if raw.len() < 12 + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretError::Open)?;
        let plain = Aes256Gcm::new(&self.0)
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_plaintext() {
        let key = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        let sealed = key.seal(&SecretString::from("hunter2-very-secret"));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            key.open(&sealed).unwrap().expose_secret(),
            "hunter2-very-secret"
        );
        let other = SecretKey::from_base64(&SecretKey::generate()).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
    }
}
