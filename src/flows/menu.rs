//! Menu state in the `onData` URL of a `<Gather>`: which menu was offered,
//! at which prompt of the call, by which flow rule, signed for that call.
//! Any replica answers the `dtmf` push from the URL alone; a state that was
//! not offered for that call (an edited URL, a body from another call)
//! fails the signature.

use hmac::{Hmac, Mac};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

/// Bytes of the HMAC kept in the URL (128 bits).
const SIG_BYTES: usize = 16;

/// The key menu state is signed with: the same on every replica.
#[derive(Clone)]
pub struct MenuKey(Vec<u8>);

impl std::fmt::Debug for MenuKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MenuKey(<redacted>)")
    }
}

/// What a `dtmf` push's URL says about the menu it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuState {
    /// Offered for this call: menu `menu` as prompt number `step` (1-based)
    /// of the call, started by flow rule `rule`.
    Offered {
        menu: String,
        step: u32,
        rule: String,
    },
    /// Menu state that this call was not offered (or that does not parse);
    /// `menu` as the URL names it.
    NotOffered { menu: String },
}

impl MenuState {
    pub fn menu(&self) -> &str {
        match self {
            MenuState::Offered { menu, .. } | MenuState::NotOffered { menu } => menu,
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

impl MenuKey {
    pub fn new(key: Vec<u8>) -> Self {
        MenuKey(key)
    }

    fn mac(&self, call_id: &str, menu: &str, step: u32, rule: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        for part in [call_id, menu, &step.to_string(), rule] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The query string of the `onData` URL for this state.
    pub fn query(&self, call_id: &str, menu: &str, step: u32, rule: &str) -> String {
        let sig = self.mac(call_id, menu, step, rule).finalize().into_bytes();
        format!(
            "menu={}&step={step}&rule={}&sig={}",
            utf8_percent_encode(menu, NON_ALPHANUMERIC),
            utf8_percent_encode(rule, NON_ALPHANUMERIC),
            hex::encode(&sig[..SIG_BYTES])
        )
    }

    /// The state `query` carries for `call_id`; `None` when it carries no
    /// menu state at all (a push to the plain URL).
    pub fn verify(&self, call_id: &str, query: Option<&str>) -> Option<MenuState> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let menu = get("menu")?.to_string();
        let offered = (|| {
            let step: u32 = get("step")?.parse().ok()?;
            let rule = get("rule")?;
            let sig = hex::decode(get("sig")?).ok()?;
            if sig.len() != SIG_BYTES {
                return None;
            }
            self.mac(call_id, &menu, step, rule)
                .verify_truncated_left(&sig)
                .ok()?;
            Some((step, rule.to_string()))
        })();
        Some(match offered {
            Some((step, rule)) if step >= 1 => MenuState::Offered { menu, step, rule },
            _ => MenuState::NotOffered { menu },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_verifies_for_its_call_only() {
        let key = MenuKey::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let q = key.query("call-1", "main", 2, "hot line");
        assert!(
            q.starts_with("menu=main&step=2&rule=hot%20line&sig="),
            "{q}"
        );
        assert_eq!(
            key.verify("call-1", Some(&q)),
            Some(MenuState::Offered {
                menu: "main".into(),
                step: 2,
                rule: "hot line".into()
            })
        );
        let not = Some(MenuState::NotOffered {
            menu: "main".into(),
        });
        assert_eq!(key.verify("call-2", Some(&q)), not, "another call");
        assert_eq!(
            key.verify("call-1", Some(&q.replace("step=2", "step=1"))),
            not
        );
        assert_eq!(
            key.verify("call-1", Some(&q.replace("sig=", "sig=00"))),
            not
        );
        let other = MenuKey::new(b"another key, another database!!".to_vec());
        assert_eq!(other.verify("call-1", Some(&q)), not, "another key");
        assert_eq!(key.verify("call-1", None), None);
        assert_eq!(key.verify("call-1", Some("a=b")), None);
        assert_eq!(key.verify("call-1", Some("%zz")), None);
    }
}
