//! What an operator should hear about before it bites, though `serve` runs
//! with it: a certificate that expired or expires soon, a key or config
//! file others may read, connection caps above the open-file limit. `serve`
//! logs each at start (and a certificate's again when it is reloaded);
//! `serve --check-config` prints them.

use std::time::{Duration, SystemTime};

use crate::config::{Command, Config, Parsed, TlsFiles, readable_by_others};

/// A certificate this close to its end gets a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(21 * 24 * 3600);
/// Descriptors the process needs besides its connections (database,
/// spool, logs, outgoing connections of the bridges).
const SPARE_DESCRIPTORS: u64 = 64;

/// Every warning for `config`, as sentences.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = crate::config::startup_warnings(config);
    let listeners = [
        (
            config.http_listener.tls.as_ref(),
            ("--tls-cert", "--tls-key"),
        ),
        (
            config.grpc_listener.tls.as_ref(),
            ("--grpc-tls-cert", "--grpc-tls-key"),
        ),
    ];
    for (files, flags) in listeners {
        if let Some(files) = files {
            out.extend(tls_warnings(files, flags, SystemTime::now()));
        }
    }
    out.extend(descriptor_warning(config));
    out
}

/// The certificate's validity and the key file's mode.
pub fn tls_warnings(
    files: &TlsFiles,
    (cert_flag, key_flag): (&str, &str),
    now: SystemTime,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(certs) = crate::tls::read_certs(&files.cert, cert_flag)
        && let Some(leaf) = certs.first()
        && let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref())
    {
        let not_after = cert.validity().not_after.timestamp();
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let when = jiff::Timestamp::from_second(not_after)
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|_| not_after.to_string());
        if not_after <= now_secs {
            out.push(format!(
                "{cert_flag} {}: the certificate expired on {when}; clients refuse it",
                files.cert.display()
            ));
        } else if not_after - now_secs <= EXPIRY_WARNING.as_secs() as i64 {
            out.push(format!(
                "{cert_flag} {}: the certificate expires on {when}, in {} days; renew it (SIGHUP reloads it)",
                files.cert.display(),
                (not_after - now_secs) / 86_400
            ));
        }
    }
    out.extend(readable_by_others(&files.key, key_flag, "a private key"));
    out
}

/// What `serve --check-config` prints: the effective configuration
/// ([`crate::config::check_config`]) and then every warning, as comments.
pub fn check_config(parsed: &Parsed) -> Result<String, String> {
    let mut report = crate::config::check_config(parsed)?;
    if let Command::Serve(args) = &parsed.cli.command {
        let config = args.as_ref().clone().into_config()?;
        for warning in warnings(&config)
            .into_iter()
            .chain(parsed.config_file_warning())
        {
            report.push_str(&format!("# warning: {warning}\n"));
        }
    }
    Ok(report)
}

/// The connection caps against the open-file limit (`ulimit -n`,
/// `LimitNOFILE`): past it, accept fails instead of the caps refusing.
fn descriptor_warning(config: &Config) -> Option<String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given; the pointer is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let caps = (config.http_listener.max_connections + config.grpc_listener.max_connections) as u64;
    let needed = caps.saturating_add(SPARE_DESCRIPTORS);
    (limit.rlim_cur != libc::RLIM_INFINITY && needed > limit.rlim_cur).then(|| {
        format!(
            "--max-connections ({}) and --grpc-max-connections ({}) allow more connections than \
             the open-file limit ({}) leaves room for; raise it (LimitNOFILE, ulimit -n) to at \
             least {needed} or lower the caps",
            config.http_listener.max_connections,
            config.grpc_listener.max_connections,
            limit.rlim_cur
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A self-signed certificate valid until `not_after` (seconds since
    /// the epoch), with its key, written 0600 / 0644 as asked.
    fn files(dir: &Path, not_after: i64, key_mode: u32) -> TlsFiles {
        use std::os::unix::fs::PermissionsExt as _;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        let (y, m, d) = {
            let date = jiff::Timestamp::from_second(not_after)
                .unwrap()
                .in_tz("UTC")
                .unwrap()
                .date();
            (date.year() as i32, date.month() as u8, date.day() as u8)
        };
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{not_after}.pem")),
            key: dir.join(format!("{not_after}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(key_mode)).unwrap();
        files
    }

    #[test]
    fn expired_soon_expiring_and_readable_keys_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = 86_400;
        let flags = ("--tls-cert", "--tls-key");
        let expired = files(dir.path(), 1_800_000_000 - 3 * day, 0o600);
        let w = tls_warnings(&expired, flags, now);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("the certificate expired on"), "{w:?}");
        let soon = files(dir.path(), 1_800_000_000 + 10 * day, 0o600);
        let w = tls_warnings(&soon, flags, now);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("expires on") && w[0].contains("in 9 days"),
            "{w:?}"
        );
        let fine = files(dir.path(), 1_800_000_000 + 200 * day, 0o644);
        let w = tls_warnings(&fine, flags, now);
        assert_eq!(w.len(), 1, "only the key: {w:?}");
        assert!(
            w[0].contains("--tls-key") && w[0].contains("mode 644"),
            "{w:?}"
        );
        let good = files(dir.path(), 1_800_000_000 + 300 * day, 0o600);
        assert!(tls_warnings(&good, flags, now).is_empty());
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write as _;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn parse_file(path: &Path) -> Parsed {
        let argv = ["sipgate-sidecar", "serve", "--check-config"].map(std::ffi::OsString::from);
        let path = path.display().to_string();
        crate::config::parse(argv.to_vec(), move |name| {
            (name == crate::config::CONFIG_ENV).then(|| path.clone())
        })
        .unwrap()
    }

    #[test]
    fn check_config_warns_about_a_config_file_with_secrets_others_may_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let config = config_file("webhook-token = \"s3cr3t\"\n");
        std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let parsed = parse_file(config.path());
        let report = check_config(&parsed).unwrap();
        assert!(
            report.contains("# warning: --config") && report.contains("mode 644"),
            "{report}"
        );
        std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let parsed = parse_file(config.path());
        assert!(!check_config(&parsed).unwrap().contains("# warning"));
        // Without a secret in it, a readable file is fine.
        let plain = config_file("country-code = \"43\"\n");
        std::fs::set_permissions(plain.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let parsed = parse_file(plain.path());
        assert!(!check_config(&parsed).unwrap().contains("--config"));
    }

    #[test]
    fn caps_above_the_open_file_limit_are_warned_about() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        if limit.rlim_cur == libc::RLIM_INFINITY {
            return;
        }
        let mut config = Config::default();
        config.http_listener.max_connections = limit.rlim_cur as usize;
        let warning = descriptor_warning(&config).expect("a warning");
        assert!(warning.contains("open-file limit"), "{warning}");
        config.http_listener.max_connections = 1;
        config.grpc_listener.max_connections = 1;
        if limit.rlim_cur > 66 {
            assert_eq!(descriptor_warning(&config), None);
        }
    }
}
