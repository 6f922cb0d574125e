//! RSA keys: reading OCI's PEM keys (PKCS#1, PKCS#8, passphrase-protected
//! PKCS#8), and the session keys of federated principals.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use credential_provider::{Error, Secret};
use pkcs8::der::Decode as _;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;

/// An RSA private key. Its `Debug` shows nothing of it.
pub struct PrivateKey(KeyPair);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

impl PrivateKey {
    pub fn key_pair(&self) -> &KeyPair {
        &self.0
    }

    /// Reads a PEM private key. `source` names where it came from, for errors;
    /// nothing of the key itself is ever quoted.
    pub fn from_pem(pem: &str, passphrase: Option<&Secret>, source: &str) -> Result<PrivateKey, Error> {
        // A key pasted into a variable may carry literal "\n" escapes.
        let pem = if !pem.contains('\n') && pem.contains("\\n") { pem.replace("\\n", "\n") } else { pem.to_string() };
        let pem = Secret::new(pem);
        let text = pem.expose();
        let refuse = |why: &str| Error::Config(format!("the private key in {source} {why}"));
        if text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(refuse(
                "is in OpenSSL's legacy encrypted format; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`",
            ));
        }
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            let passphrase = passphrase.ok_or_else(|| refuse("is encrypted and no passphrase is configured"))?;
            let (_, document) = pkcs8::der::Document::from_pem(text).map_err(|_| refuse("is not valid PEM"))?;
            let encrypted = pkcs8::EncryptedPrivateKeyInfo::from_der(document.as_bytes())
                .map_err(|_| refuse("is not an encrypted PKCS#8 key"))?;
            let decrypted = encrypted
                .decrypt(passphrase.expose())
                .map_err(|_| refuse("cannot be decrypted with the passphrase"))?;
            return KeyPair::from_pkcs8(decrypted.as_bytes()).map(PrivateKey).map_err(|_| refuse("is not an RSA key"));
        }
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| refuse("is not a PEM private key"))?;
        let pair = match &key {
            PrivateKeyDer::Pkcs1(der) => KeyPair::from_der(der.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(der) => KeyPair::from_pkcs8(der.secret_pkcs8_der()),
            _ => return Err(refuse("is not an RSA key")),
        };
        pair.map(PrivateKey).map_err(|_| refuse("is not a usable RSA key"))
    }

    /// A fresh 2048-bit session key.
    pub fn generate() -> Result<PrivateKey, Error> {
        KeyPair::generate(KeySize::Rsa2048)
            .map(PrivateKey)
            .map_err(|_| Error::Config("cannot generate an RSA session key".into()))
    }

    /// The public key as OCI's federation wants it: base64 of the DER
    /// SubjectPublicKeyInfo, without PEM armour.
    pub fn public_key_base64(&self) -> Result<String, Error> {
        let der: PublicKeyX509Der =
            self.0.public_key().as_der().map_err(|_| Error::Config("cannot encode the session public key".into()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(der.as_ref()))
    }

    /// The key as base64 PKCS#8, to keep beside its session token.
    pub fn to_pkcs8_base64(&self) -> Result<Secret, Error> {
        let der: Pkcs8V1Der = self.0.as_der().map_err(|_| Error::Config("cannot encode the session key".into()))?;
        Ok(Secret::new(base64::engine::general_purpose::STANDARD.encode(der.as_ref())))
    }

    /// The key back from [`PrivateKey::to_pkcs8_base64`].
    pub fn from_pkcs8_base64(encoded: &str) -> Result<PrivateKey, Error> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| Error::Config("the cached session key is not base64".into()))?;
        KeyPair::from_pkcs8(&der)
            .map(PrivateKey)
            .map_err(|_| Error::Config("the cached session key is not usable".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_survive_the_cache() {
        let key = PrivateKey::generate().expect("generate");
        let stored = key.to_pkcs8_base64().expect("encode");
        let back = PrivateKey::from_pkcs8_base64(stored.expose()).expect("decode");
        assert_eq!(key.public_key_base64().expect("public"), back.public_key_base64().expect("public"));
        assert_eq!(format!("{key:?}"), "PrivateKey([redacted])");
    }

    #[test]
    fn refuses_what_it_cannot_read_without_quoting_it() {
        for (pem, expect) in [
            ("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nxx\n-----END RSA PRIVATE KEY-----", "legacy"),
            ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----", "no passphrase"),
            ("garbage-key-material", "not a PEM private key"),
        ] {
            let error = PrivateKey::from_pem(pem, None, "the test").expect_err(pem).to_string();
            assert!(error.contains(expect), "{error}");
            assert!(!error.contains("garbage-key-material"), "{error}");
        }
    }
}
