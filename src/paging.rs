//! Page sizes of every paged read, in one place.

/// The default and the largest page a client may ask for.
#[derive(Debug, Clone, Copy)]
pub struct PageLimit {
    pub default: u32,
    pub max: u32,
}

impl PageLimit {
    /// The page size to use for a request asking for `requested` (0 = default).
    pub fn clamp(self, requested: u32) -> u32 {
        if requested == 0 {
            self.default
        } else {
            requested.min(self.max)
        }
    }
}

pub const CALLS: PageLimit = PageLimit {
    default: 50,
    max: 1000,
};
pub const AUDIT: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};
pub const EVENTS: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};
