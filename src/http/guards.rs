//! Who may post webhooks: the source-address allow-list (with trusted
//! proxies), the secret path token and HTTP Basic credentials. Each check
//! runs before the body is read and answers a refusal with the reason.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use base64::Engine;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use super::error::WebhookError;
use crate::config::{BasicAuth, Secret};

/// The listener's access rules, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Guards {
    /// Source addresses allowed to post; empty allows all.
    pub allow_sources: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub webhook_token: Option<Secret>,
    pub basic_auth: Option<BasicAuth>,
}

impl Guards {
    /// Whether `peer` is a proxy whose forwarding headers are believed.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_proxies.iter().any(|n| n.contains(&ip)))
    }

    /// Runs every check in order: source, path token, Basic credentials.
    pub fn check(
        &self,
        peer: Option<IpAddr>,
        token: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), WebhookError> {
        self.check_source(peer, headers)?;
        self.check_token(token)?;
        self.check_basic(headers)
    }

    /// The address a push really came from: the TCP peer, or, when the peer
    /// is a trusted proxy, the first `X-Forwarded-For` entry from the right
    /// that is not a trusted proxy. Entries are walked from the right (the
    /// ones our proxies appended); an entry that does not parse stops the walk
    /// with a refusal, so an attacker's entry to its left can never decide.
    fn source_address(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<Option<IpAddr>, WebhookError> {
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let mut entries = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let value = value.to_str().map_err(|_| {
                WebhookError::Forbidden("X-Forwarded-For is not readable text".into())
            })?;
            entries.extend(value.split(',').map(str::trim));
        }
        for entry in entries.into_iter().rev() {
            let ip = forwarded_ip(entry).ok_or_else(|| {
                WebhookError::Forbidden(format!(
                    "X-Forwarded-For entry '{}' is not an address",
                    entry.chars().take(64).collect::<String>()
                ))
            })?;
            if !self.trusts(Some(ip)) {
                return Ok(Some(ip));
            }
        }
        Ok(peer)
    }

    /// For display: the client a trusted proxy `peer` forwarded for, when
    /// `X-Forwarded-For` names one (`None` for a direct client).
    pub fn forwarded_source(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.trusts(Some(peer)) {
            return None;
        }
        match self.source_address(Some(peer), headers) {
            Ok(Some(client)) if client != peer => Some(client),
            _ => None,
        }
    }

    fn check_source(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<(), WebhookError> {
        if self.allow_sources.is_empty() {
            return Ok(());
        }
        match self.source_address(peer, headers)? {
            Some(ip) if self.allow_sources.iter().any(|n| n.contains(&ip)) => Ok(()),
            Some(ip) => Err(WebhookError::Forbidden(format!(
                "source address {ip} is not allowed"
            ))),
            None => Err(WebhookError::Forbidden("source address unknown".into())),
        }
    }

    /// The token is compared in constant time.
    fn check_token(&self, given: Option<&str>) -> Result<(), WebhookError> {
        match (&self.webhook_token, given) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(WebhookError::NotFound(
                "no webhook token is configured: use /api/v1/sipgate/{in,out}".into(),
            )),
            (Some(_), None) => Err(WebhookError::Unauthorized(
                "webhook token missing from the path".into(),
            )),
            (Some(expected), Some(given)) => {
                if bool::from(expected.expose().as_bytes().ct_eq(given.as_bytes())) {
                    Ok(())
                } else {
                    Err(WebhookError::Unauthorized("wrong webhook token".into()))
                }
            }
        }
    }

    /// Without (right) credentials sipgate gets a challenge and retries with
    /// the `user:pass@` of its webhook URL.
    fn check_basic(&self, headers: &HeaderMap) -> Result<(), WebhookError> {
        let Some(basic) = &self.basic_auth else {
            return Ok(());
        };
        let expected = format!("{}:{}", basic.user, basic.password.expose());
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_credentials)
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            });
        match given {
            Some(g) if bool::from(g.ct_eq(expected.as_bytes())) => Ok(()),
            _ => Err(WebhookError::BasicAuthRequired),
        }
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port, IPv6 in
/// brackets or bare.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if after.is_empty() || after.strip_prefix(':').is_some_and(is_port) {
            return ip.parse().ok();
        }
        return None;
    }
    let (ip, port) = entry.rsplit_once(':')?;
    if is_port(port) {
        // "a:b:c" without brackets is an IPv6 address, parsed above or invalid.
        ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        None
    }
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The credentials of an `Authorization: Basic …` header; the scheme name is
/// case-insensitive (RFC 7235).
fn basic_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then_some(credentials)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let guards = Guards {
            allow_sources: vec![net("217.116.118.254/32")],
            trusted_proxies: vec![net("127.0.0.1/32")],
            ..Guards::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("217.116.118.254"),
        );
        let proxy = Some("127.0.0.1".parse().unwrap());
        let stranger = Some("198.51.100.7".parse().unwrap());
        assert!(guards.check(proxy, None, &headers).is_ok());
        assert!(matches!(
            guards.check(stranger, None, &headers),
            Err(WebhookError::Forbidden(_))
        ));
    }

    #[test]
    fn forwarded_entries_that_do_not_parse_or_are_untrusted_refuse() {
        let guards = Guards {
            allow_sources: vec![net("217.116.118.254/32")],
            trusted_proxies: vec![net("127.0.0.1/32")],
            ..Guards::default()
        };
        let proxy = Some("127.0.0.1".parse().unwrap());
        for forwarded in [
            "217.116.118.254, 198.51.100.7:4444",
            "217.116.118.254, unknown",
            "217.116.118.254, [2001:db8::1]",
            "217.116.118.254, [2001:db8::1]:443",
            "217.116.118.254, 2001:db8::1",
            "217.116.118.254, ",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_str(forwarded).unwrap());
            assert!(
                matches!(
                    guards.check(proxy, None, &headers),
                    Err(WebhookError::Forbidden(_))
                ),
                "{forwarded} was let in"
            );
        }
        // sipgate behind two of our proxies, ports stripped.
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.9, 217.116.118.254:5060, 127.0.0.1"),
        );
        assert!(guards.check(proxy, None, &headers).is_ok());
    }

    #[test]
    fn forwarded_ip_strips_ports_and_brackets() {
        let ip = |s: &str| forwarded_ip(s).map(|ip| ip.to_string());
        assert_eq!(ip("198.51.100.7:4444").as_deref(), Some("198.51.100.7"));
        assert_eq!(ip("[2001:db8::1]:443").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        for bad in [
            "unknown",
            "",
            "1.2.3.4:x",
            "[::1]x",
            "1.2.3.4:123456",
            "_hidden",
        ] {
            assert_eq!(ip(bad), None, "{bad}");
        }
    }

    #[test]
    fn token_and_basic_credentials_are_checked() {
        let guards = Guards {
            webhook_token: Some(Secret::new("tok")),
            basic_auth: Some(BasicAuth {
                user: "sip".into(),
                password: Secret::new("pw"),
            }),
            ..Guards::default()
        };
        let mut headers = HeaderMap::new();
        assert!(matches!(
            guards.check(None, Some("nope"), &headers),
            Err(WebhookError::Unauthorized(_))
        ));
        assert!(matches!(
            guards.check(None, Some("tok"), &headers),
            Err(WebhookError::BasicAuthRequired)
        ));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic c2lwOnB3"),
        );
        assert!(guards.check(None, Some("tok"), &headers).is_ok());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bAsIc c2lwOnB3"),
        );
        assert!(guards.check(None, Some("tok"), &headers).is_ok());
    }
}
