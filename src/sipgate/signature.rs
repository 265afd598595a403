//! `X-Sipgate-Signature`: RSASSA-PKCS1-v1_5 with SHA-256 over the raw body,
//! checked against sipgate's published 4096-bit key (or one from a PEM file).

use base64::Engine;
use rsa::{
    RsaPublicKey,
    pkcs1::DecodeRsaPublicKey,
    pkcs1v15::{Signature, VerifyingKey},
    pkcs8::DecodePublicKey,
    signature::Verifier,
};
use sha2::Sha256;

/// sipgate's Push API key, as published in its SDK and request verifier.
pub const SIPGATE_PUBLIC_KEY_PEM: &str = include_str!("sipgate-push.pub.pem");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Sipgate-Signature header")]
    Missing,
    #[error("X-Sipgate-Signature is not valid base64")]
    Malformed,
    #[error("X-Sipgate-Signature does not match the body")]
    Invalid,
    #[error("not an RSA public key: {0}")]
    BadKey(String),
}

#[derive(Clone)]
pub struct SignatureVerifier {
    key: VerifyingKey<Sha256>,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureVerifier")
    }
}

impl SignatureVerifier {
    /// The verifier with sipgate's built-in key.
    pub fn sipgate() -> Self {
        Self::from_pem(SIPGATE_PUBLIC_KEY_PEM).expect("the built-in sipgate key parses")
    }

    /// Accepts `BEGIN PUBLIC KEY` (SPKI) and `BEGIN RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        let pem = pem.trim();
        let key = RsaPublicKey::from_public_key_pem(pem)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
            .map_err(|e| SignatureError::BadKey(e.to_string()))?;
        Ok(SignatureVerifier {
            key: VerifyingKey::new(key),
        })
    }

    /// Checks `header` (base64) against the exact bytes of `body`.
    pub fn verify(&self, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
        let header = header
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or(SignatureError::Missing)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(header)
            .map_err(|_| SignatureError::Malformed)?;
        let signature =
            Signature::try_from(bytes.as_slice()).map_err(|_| SignatureError::Invalid)?;
        self.key
            .verify(body, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use rsa::{
        RsaPrivateKey,
        pkcs1v15::SigningKey,
        pkcs8::DecodePrivateKey,
        signature::{SignatureEncoding, Signer},
    };

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn signature(name: &str) -> String {
        String::from_utf8(fixture(name)).unwrap().trim().to_string()
    }

    #[test]
    fn both_real_sipgate_vectors_verify() {
        let verifier = SignatureVerifier::sipgate();
        for n in [1, 2] {
            let body = fixture(&format!("sipgate-vector-{n}.body"));
            let sig = signature(&format!("sipgate-vector-{n}.sig"));
            assert_eq!(verifier.verify(&body, Some(&sig)), Ok(()), "vector {n}");
        }
    }

    #[test]
    fn one_changed_byte_or_a_trailing_newline_fails() {
        let verifier = SignatureVerifier::sipgate();
        let body = fixture("sipgate-vector-2.body");
        let sig = signature("sipgate-vector-2.sig");
        let changed = String::from_utf8(body.clone()).unwrap().replace(
            "fullUserId%5B%5D%5B0%5D=123456789",
            "fullUserId%5B%5D%5B0%5D=123456779",
        );
        assert_eq!(
            verifier.verify(changed.as_bytes(), Some(&sig)),
            Err(SignatureError::Invalid)
        );
        let mut newline = body.clone();
        newline.push(b'\n');
        assert_eq!(
            verifier.verify(&newline, Some(&sig)),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn missing_or_garbage_headers_are_refused() {
        let verifier = SignatureVerifier::sipgate();
        assert_eq!(verifier.verify(b"x", None), Err(SignatureError::Missing));
        assert_eq!(
            verifier.verify(b"x", Some("  ")),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verifier.verify(b"x", Some("not base64!")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verifier.verify(b"x", Some("AAAA")),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn a_key_from_a_pem_file_replaces_sipgates() {
        let private = RsaPrivateKey::from_pkcs8_pem(
            &String::from_utf8(fixture("test-signing-key.pem")).unwrap(),
        )
        .or_else(|_| {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            RsaPrivateKey::from_pkcs1_pem(
                &String::from_utf8(fixture("test-signing-key.pem")).unwrap(),
            )
        })
        .unwrap();
        let body = b"event=hangup&callId=1&cause=normalClearing";
        let sig = SigningKey::<Sha256>::new(private).sign(body).to_bytes();
        let header = base64::engine::general_purpose::STANDARD.encode(sig);
        let own = SignatureVerifier::from_pem(
            &String::from_utf8(fixture("test-signing-key.pub.pem")).unwrap(),
        )
        .unwrap();
        assert_eq!(own.verify(body, Some(&header)), Ok(()));
        assert_eq!(
            SignatureVerifier::sipgate().verify(body, Some(&header)),
            Err(SignatureError::Invalid)
        );
        assert!(matches!(
            SignatureVerifier::from_pem("nope"),
            Err(SignatureError::BadKey(_))
        ));
    }
}
