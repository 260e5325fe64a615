//! Password material made here: SHA512-CRYPT / SHA256-CRYPT hashes of a plaintext (what
//! Dovecot's `doveadm pw -s SHA512-CRYPT` makes, RustCrypto's `sha-crypt`), checks of a
//! password against a carried crypt hash, and temporary passwords.

use mailshift_core::provision::PasswordHash;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha_crypt::{PasswordHasher, PasswordVerifier, ShaCrypt};

/// Schemes mailshift can hash a plaintext with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CryptScheme {
    #[default]
    #[serde(rename = "SHA512-CRYPT")]
    Sha512Crypt,
    #[serde(rename = "SHA256-CRYPT")]
    Sha256Crypt,
}

impl CryptScheme {
    pub fn name(self) -> &'static str {
        match self {
            CryptScheme::Sha512Crypt => "SHA512-CRYPT",
            CryptScheme::Sha256Crypt => "SHA256-CRYPT",
        }
    }

    fn hasher(self) -> ShaCrypt {
        match self {
            CryptScheme::Sha512Crypt => ShaCrypt::SHA512,
            CryptScheme::Sha256Crypt => ShaCrypt::SHA256,
        }
    }
}

/// `{SHA512-CRYPT}$6$rounds=5000$SALT$HASH` of `password`, with a random 16-character
/// salt.
pub fn crypt(scheme: CryptScheme, password: &SecretString) -> Result<PasswordHash, String> {
    let mut salt = [0u8; 12];
    rand::rng().fill(&mut salt);
    let h = scheme
        .hasher()
        .hash_password_with_salt(password.expose_secret().as_bytes(), &salt)
        .map_err(|e| format!("cannot hash a password with {}: {e}", scheme.name()))?;
    PasswordHash::parse(&format!("{{{}}}{}", scheme.name(), h.as_str()))
}

/// Whether `password` matches a carried SHA-crypt hash; None for schemes this crate
/// cannot check (bcrypt, Argon2, salted SHA...).
pub fn matches(hash: &PasswordHash, password: &SecretString) -> Option<bool> {
    let value = hash.value();
    let crypt = matches!(hash.scheme(), "SHA512-CRYPT" | "SHA256-CRYPT")
        || (hash.scheme() == "CRYPT" && (value.starts_with("$6$") || value.starts_with("$5$")));
    if !crypt {
        return None;
    }
    Some(
        ShaCrypt::default()
            .verify_password(password.expose_secret().as_bytes(), value)
            .is_ok(),
    )
}

/// A strong temporary password: four groups of five characters without look-alikes
/// (0/O, 1/l/I), with lower case, upper case and digits (about 116 bits).
pub fn temporary_password() -> SecretString {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    loop {
        let chars: Vec<u8> = (0..20)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
            .collect();
        let has = |f: fn(&u8) -> bool| chars.iter().any(f);
        if has(u8::is_ascii_lowercase) && has(u8::is_ascii_uppercase) && has(u8::is_ascii_digit) {
            let groups: Vec<String> = chars
                .chunks(5)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            return SecretString::from(groups.join("-"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_match_dovecots() {
        let pw = SecretString::from("Old-Pw-1");
        for scheme in [CryptScheme::Sha512Crypt, CryptScheme::Sha256Crypt] {
            let h = crypt(scheme, &pw).unwrap();
            assert_eq!(h.scheme(), scheme.name());
            assert_eq!(matches(&h, &pw), Some(true));
            assert_eq!(matches(&h, &SecretString::from("other")), Some(false));
        }
        // `doveadm pw -s SHA512-CRYPT -p test123`
        let dovecot = PasswordHash::parse("{SHA512-CRYPT}$6$37iK/C/QOI.sOIBV$5y50eSP84mBy54JWznjJ30X2VMmksaJ4d8uU3Fo6kia5l.cVSbOKI/40QfSBpNcxMpI1cmVaGuhesqvc4GBOH0").unwrap();
        assert_eq!(
            matches(&dovecot, &SecretString::from("test123")),
            Some(true)
        );
        let blf = PasswordHash::parse(
            "{BLF-CRYPT}$2y$05$7gE74aq3A/vc4c2zikWLP.yEbAKNspErwp5YiiBYRSgdIoTuIpbue",
        )
        .unwrap();
        assert_eq!(matches(&blf, &pw), None);
    }

    #[test]
    fn temporary_passwords_are_strong_and_different() {
        let a = temporary_password();
        let b = temporary_password();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 23);
        assert_eq!(a.expose_secret().matches('-').count(), 3);
    }
}
