//! Who may hold a connection: the allow-list, applied when the connection
//! is accepted (before a byte is read, so a stranger never holds a slot
//! while it trickles a header), and a cap on the connections one address
//! holds at once, so one client cannot take the listener from the others.
//! Trusted proxies are always admitted and not capped per address: every
//! client behind them shares their address.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use ipnet::IpNet;

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Neither in `--allow-sources` nor a trusted proxy.
    Forbidden,
    /// The address holds its share of connections already.
    PerSource,
}

/// The admission policy of one listener and the connections each address
/// holds.
#[derive(Debug)]
pub(super) struct Sources {
    /// Empty: every address may connect.
    allow: Vec<IpNet>,
    trusted: Vec<IpNet>,
    per_source: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    pub(super) fn new(per_source: usize) -> Sources {
        Sources {
            allow: Vec::new(),
            trusted: Vec::new(),
            per_source,
            open: Mutex::default(),
        }
    }

    pub(super) fn with_allow_list(self, allow: &[IpNet], trusted: &[IpNet]) -> Sources {
        Sources {
            allow: allow.to_vec(),
            trusted: trusted.to_vec(),
            ..self
        }
    }

    pub(super) fn per_source(&self) -> usize {
        self.per_source
    }

    /// Admits a connection from `ip`, or says why not. The slot counts it
    /// against the address until dropped.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<SourceSlot>, Refusal> {
        let ip = ip.to_canonical();
        let contains = |nets: &[IpNet]| nets.iter().any(|net| net.contains(&ip));
        if contains(&self.trusted) {
            return Ok(None);
        }
        if !self.allow.is_empty() && !contains(&self.allow) {
            return Err(Refusal::Forbidden);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.entry(ip).or_insert(0);
        if *held >= self.per_source {
            return Err(Refusal::PerSource);
        }
        *held += 1;
        Ok(Some(SourceSlot {
            sources: self.clone(),
            ip,
        }))
    }
}

/// One connection counted against its address.
#[derive(Debug)]
pub(super) struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = open.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_gets_its_share_and_frees_it_when_done() {
        let sources = Arc::new(Sources::new(2));
        let a1 = sources.admit(ip("192.0.2.1")).unwrap();
        let _a2 = sources.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            sources.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerSource
        );
        // The IPv4-mapped form is the same address.
        assert_eq!(
            sources.admit(ip("::ffff:192.0.2.1")).unwrap_err(),
            Refusal::PerSource
        );
        let _b = sources.admit(ip("192.0.2.2")).unwrap();
        drop(a1);
        assert!(sources.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn the_allow_list_refuses_strangers_and_trusted_proxies_are_not_capped() {
        let sources = Arc::new(Sources::new(1).with_allow_list(
            &["217.116.118.254/32".parse().unwrap()],
            &["10.0.0.0/8".parse().unwrap()],
        ));
        assert_eq!(
            sources.admit(ip("198.51.100.7")).unwrap_err(),
            Refusal::Forbidden
        );
        let _sipgate = sources.admit(ip("217.116.118.254")).unwrap();
        let proxied: Vec<_> = (0..5)
            .map(|_| sources.admit(ip("10.1.2.3")).unwrap())
            .collect();
        assert!(proxied.iter().all(Option::is_none), "not counted");
    }
}
