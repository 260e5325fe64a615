//! Signing Apple profiles: a CMS SignedData (RFC 5652) that encapsulates the profile,
//! as `openssl smime -sign -outform der -nodetach` makes it: SHA-256, RSA PKCS#1 v1.5,
//! the signer's certificate (and its chain) included, content-type and message-digest
//! signed attributes. Devices then show the profile as signed by the operator.
//!
//! Only RSA keys, unencrypted PEM (PKCS#8 or PKCS#1). No I/O: the PEM bytes are given.

use crate::error::{Error, Result};
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::oid::db::{rfc5911::ID_DATA, rfc5912::ID_SHA_256};
use der::{Any, Decode, Encode, Tag};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// The operator's signing identity, loaded once.
pub struct ProfileSigner {
    cert: Certificate,
    chain: Vec<Certificate>,
    key: rsa::pkcs1v15::SigningKey<Sha256>,
}

impl std::fmt::Debug for ProfileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileSigner")
            .field("subject", &self.cert.tbs_certificate.subject.to_string())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ProfileSigner {
    /// From PEM: the signing certificate (the first one of `cert_pem`; any further ones
    /// are taken as its chain), its private key, and optionally more chain certificates.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], chain_pem: Option<&[u8]>) -> Result<Self> {
        let mut certs = Certificate::load_pem_chain(cert_pem).map_err(|e| {
            Error::Signing(format!(
                "the certificate file holds no PEM certificate ({e}); give the signing \
                 certificate as PEM (-----BEGIN CERTIFICATE-----)"
            ))
        })?;
        if certs.is_empty() {
            return Err(Error::Signing(
                "the certificate file holds no PEM certificate".into(),
            ));
        }
        let cert = certs.remove(0);
        let mut chain = certs;
        if let Some(extra) = chain_pem {
            chain.extend(Certificate::load_pem_chain(extra).map_err(|e| {
                Error::Signing(format!("the chain file holds no PEM certificates ({e})"))
            })?);
        }
        let key = load_key(key_pem)?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| Error::Signing(format!("the certificate's public key: {e}")))?;
        let cert_key = RsaPublicKey::from_public_key_der(&spki).map_err(|_| {
            Error::Signing(
                "the certificate does not hold an RSA key (only RSA is supported)".into(),
            )
        })?;
        if cert_key != RsaPublicKey::from(&key) {
            return Err(Error::Signing(
                "the private key does not belong to the certificate".into(),
            ));
        }
        Ok(ProfileSigner {
            cert,
            chain,
            key: rsa::pkcs1v15::SigningKey::<Sha256>::new(key),
        })
    }

    /// The signer's subject, for messages ("CN=Acme IT,O=Acme").
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// `content` wrapped in a DER-encoded CMS SignedData.
    pub fn sign(&self, content: &[u8]) -> Result<Vec<u8>> {
        let failed = |what: &str, e: &dyn std::fmt::Display| Error::Signing(format!("{what}: {e}"));
        let econtent = Any::new(Tag::OctetString, content.to_vec())
            .map_err(|e| failed("the profile cannot be encapsulated", &e))?;
        let eci = EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: Some(econtent),
        };
        let digest = AlgorithmIdentifierOwned {
            oid: ID_SHA_256,
            parameters: None,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: self.cert.tbs_certificate.issuer.clone(),
            serial_number: self.cert.tbs_certificate.serial_number.clone(),
        });
        let signer = SignerInfoBuilder::new(&self.key, sid, digest.clone(), &eci, None)
            .map_err(|e| failed("cannot prepare the signature", &e))?;
        let mut builder = SignedDataBuilder::new(&eci);
        builder
            .add_digest_algorithm(digest)
            .map_err(|e| failed("cannot prepare the signature", &e))?;
        for c in std::iter::once(&self.cert).chain(&self.chain) {
            builder
                .add_certificate(CertificateChoices::Certificate(c.clone()))
                .map_err(|e| failed("cannot add the certificate", &e))?;
        }
        builder
            .add_signer_info::<rsa::pkcs1v15::SigningKey<Sha256>, rsa::pkcs1v15::Signature>(signer)
            .map_err(|e| failed("cannot sign", &e))?;
        let signed = builder
            .build()
            .map_err(|e| failed("cannot build the signed profile", &e))?;
        signed
            .to_der()
            .map_err(|e| failed("cannot encode the signed profile", &e))
    }
}

fn load_key(pem: &[u8]) -> Result<RsaPrivateKey> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| Error::Signing("the key file is not PEM text".into()))?;
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::Signing(
            "the private key is encrypted: give an unencrypted copy (openssl pkey -in KEY \
             -out PLAIN.pem) and keep it safe"
                .into(),
        ));
    }
    if text.contains("BEGIN RSA PRIVATE KEY") {
        return RsaPrivateKey::from_pkcs1_pem(text)
            .map_err(|_| Error::Signing("the RSA private key (PKCS#1 PEM) cannot be read".into()));
    }
    if text.contains("BEGIN PRIVATE KEY") {
        return RsaPrivateKey::from_pkcs8_pem(text).map_err(|_| {
            Error::Signing(
                "the private key cannot be read as an RSA key (only RSA is supported)".into(),
            )
        });
    }
    Err(Error::Signing(
        "the key file holds no PEM private key (-----BEGIN PRIVATE KEY-----)".into(),
    ))
}

/// Reads a DER SignedData back: the encapsulated content (for tests and checks).
pub fn signed_content(der: &[u8]) -> Option<Vec<u8>> {
    let ci = cms::content_info::ContentInfo::from_der(der).ok()?;
    let sd: cms::signed_data::SignedData = ci.content.decode_as().ok()?;
    sd.encap_content_info.econtent.map(|a| a.value().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_keys_and_certificates_are_explained() {
        let err = |c: &[u8], k: &[u8]| ProfileSigner::from_pem(c, k, None).unwrap_err().to_string();
        assert!(err(b"nothing", b"nothing").contains("no PEM certificate"));
        assert!(load_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
            .unwrap_err()
            .to_string()
            .contains("encrypted"));
        assert!(
            load_key(b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
                .unwrap_err()
                .to_string()
                .contains("no PEM private key")
        );
        assert!(signed_content(b"not der").is_none());
    }
}
