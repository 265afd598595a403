//! TLS material: PEM files read with errors that name the file, and the
//! rustls server configurations of the two listeners. One crypto provider
//! throughout (ring), the one reqwest and tonic's client already use.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use crate::config::TlsFiles;

/// ALPN of a listener that speaks HTTP/1.1 only.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];
/// ALPN of a listener that speaks HTTP/2 and HTTP/1.1.
pub const ALPN_HTTP2_AND_1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the gRPC listener.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];

/// Request extension: the request came over TLS (its callback URLs are https).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; none is an error.
pub fn read_certs(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag} {}: not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{flag} {}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn read_key(path: &Path, flag: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_pem(path, flag)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow::anyhow!(
            "{flag} {}: no usable private key in it ({e})",
            path.display()
        )
    })
}

/// A PEM file's bytes (for APIs that parse PEM themselves).
pub fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
}

/// A server configuration for `files`, offering `alpn`, optionally
/// requiring client certificates signed by a CA in `client_ca`.
pub fn server_config(
    files: &TlsFiles,
    flags: (&str, &str),
    client_ca: Option<(&Path, &str)>,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_flag, key_flag) = flags;
    let certs = read_certs(&files.cert, cert_flag)?;
    let key = read_key(&files.key, key_flag)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((path, flag)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, flag)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{flag} {}: not a CA certificate", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .with_context(|| format!("{flag} {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "{cert_flag} {} and {key_flag} {} do not make a usable pair",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_empty_files_name_the_flag_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = format!("{:#}", read_certs(&missing, "--tls-cert").unwrap_err());
        assert!(
            error.contains("--tls-cert") && error.contains("missing.pem"),
            "{error}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let error = format!("{:#}", read_certs(&empty, "--tls-cert").unwrap_err());
        assert!(error.contains("no certificate"), "{error}");
        let error = format!("{:#}", read_key(&empty, "--tls-key").unwrap_err());
        assert!(
            error.contains("--tls-key") && error.contains("no usable private key"),
            "{error}"
        );
    }
}
