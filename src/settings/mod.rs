//! Settings: validation of what an admin types, Zammad import/export, and the
//! live snapshot the webhook handler decides from.

pub mod manager;
pub mod validate;
pub mod zammad;
