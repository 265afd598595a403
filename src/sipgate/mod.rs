//! The sipgate.io Push API: form decoding, typed events, signature check, XML replies.

pub mod event;
pub mod form;
pub mod signature;
pub mod xml;
