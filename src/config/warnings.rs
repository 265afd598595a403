//! Risky but valid settings `serve` starts with, named at start so they are
//! not left on by accident (they are fine for a local try-out).

use super::{Config, SignatureMode};

/// One sentence per risky setting in `config`, saying what it exposes and
/// what to set instead; empty when there is nothing to warn about.
pub fn startup_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.signature == SignatureMode::Off {
        warnings.push(
            "the signature check is off (--signature off): a push without sipgate's \
             X-Sipgate-Signature is accepted, so anyone who reaches the webhook listener \
             can write call events and probe the block list; use it only for local tests \
             and run production with --signature require (the default)"
                .to_string(),
        );
    }
    let allows_everyone = config.allow_sources.iter().all(|net| net.prefix_len() == 0);
    if !config.http_addr.ip().is_loopback()
        && config.webhook_token.is_none()
        && config.basic_auth.is_none()
        && allows_everyone
    {
        warnings.push(format!(
            "the webhook listener on {} is reachable from other hosts and has no path token, \
             no Basic auth and no source allow-list: anyone who finds it can post to it; \
             set --webhook-token (and put it in sipgate's webhook URLs), --basic-auth, or \
             --allow-sources 217.116.118.254,212.9.46.32 (sipgate's addresses), or bind it \
             to 127.0.0.1 behind a reverse proxy",
            config.http_addr
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicAuth, Secret};

    fn config(addr: &str) -> Config {
        Config {
            http_addr: addr.parse().unwrap(),
            ..Config::default()
        }
    }

    #[test]
    fn the_defaults_warn_only_about_the_open_public_listener() {
        let warnings = startup_warnings(&Config::default());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("the webhook listener on 0.0.0.0:8080 is reachable"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("--webhook-token"), "{warnings:?}");
    }

    #[test]
    fn a_token_basic_auth_or_allow_list_each_silence_the_listener_warning() {
        let mut with_token = config("0.0.0.0:8080");
        with_token.webhook_token = Some(Secret::new("t0k"));
        let mut with_basic = config("[::]:8080");
        with_basic.basic_auth = Some(BasicAuth {
            user: "sipgate".into(),
            password: Secret::new("pw"),
        });
        let mut with_allow_list = config("192.0.2.10:8080");
        with_allow_list.allow_sources = vec!["217.116.118.254/32".parse().unwrap()];
        for c in [
            with_token,
            with_basic,
            with_allow_list,
            config("127.0.0.1:8080"),
        ] {
            assert_eq!(startup_warnings(&c), Vec::<String>::new(), "{c:?}");
        }
        assert!(startup_warnings(&config("[::1]:8080")).is_empty());
    }

    #[test]
    fn an_allow_list_that_admits_everyone_is_no_allow_list() {
        let mut c = config("0.0.0.0:8080");
        c.allow_sources = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        assert_eq!(startup_warnings(&c).len(), 1);
    }

    #[test]
    fn signature_off_is_named_on_any_address() {
        let mut c = config("127.0.0.1:8080");
        c.signature = SignatureMode::Off;
        let warnings = startup_warnings(&c);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("the signature check is off (--signature off)"),
            "{warnings:?}"
        );
        c.http_addr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(startup_warnings(&c).len(), 2);
    }
}
