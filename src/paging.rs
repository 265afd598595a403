//! Page sizes of every listing, in one place: what a requested size of 0
//! means and the most one page holds, in rows and (for events, whose raw
//! form can be large) in bytes. The store applies them; a transport may
//! apply them too, with the same result.

/// The page size rule of one listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    /// The size of a page when the request asks for 0 (no preference).
    pub default: u32,
    /// The most one page holds, whatever the request asks for.
    pub max: u32,
}

impl PageLimit {
    /// The page size to use for `requested`.
    pub const fn clamp(self, requested: u32) -> u32 {
        if requested == 0 {
            self.default
        } else if requested > self.max {
            self.max
        } else {
            requested
        }
    }
}

/// The call log (`ListCalls`), newest first.
pub const CALLS: PageLimit = PageLimit {
    default: 50,
    max: 1000,
};

/// The settings audit trail (`ListAudit`), newest first.
pub const AUDIT: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};

/// The event log (`ListEvents`, and each catch-up read of a subscriber).
pub const EVENTS: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};

/// The most bytes of events one `ListEvents` response holds, counted as
/// stored and again as encoded: well below the 4 MiB a gRPC client accepts
/// by default. A page holds at least one event, whatever its size.
pub const EVENTS_RESPONSE_BYTES: usize = 3 * 1024 * 1024;

/// The most bytes of calls one `ListCalls` response holds, as encoded; a
/// page holds at least one call, whatever its size.
pub const CALLS_RESPONSE_BYTES: usize = 3 * 1024 * 1024;

/// The most bytes of events one catch-up read of a subscriber holds (the
/// most a subscriber buffers ahead of its transport), counted as stored.
/// A page holds at least one event, whatever its size.
pub const CATCH_UP_BYTES: usize = 1024 * 1024;

/// The `page_token` of a log listing: `<kind>:<position>`, as this server
/// writes it into `next_page_token`. `None` for "", the first page.
pub fn parse_token(token: &str, kind: &str) -> Result<Option<u64>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(kind)
        .and_then(|t| t.strip_prefix(':'))
        .and_then(|t| t.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            "page_token is not one this server gave: pass a next_page_token back unchanged, or \"\" for the first page".to_string()
        })
}

/// The `next_page_token` for `position` of a `kind` listing.
pub fn token(kind: &str, position: u64) -> String {
    format!("{kind}:{position}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_the_default_and_the_max_caps() {
        assert_eq!(CALLS.clamp(0), 50);
        assert_eq!(CALLS.clamp(1), 1);
        assert_eq!(CALLS.clamp(1000), 1000);
        assert_eq!(CALLS.clamp(5000), 1000);
        assert_eq!(AUDIT.clamp(0), 100);
        assert_eq!(EVENTS.clamp(0), 100);
        assert_eq!(EVENTS.clamp(u32::MAX), 1000);
    }
}
