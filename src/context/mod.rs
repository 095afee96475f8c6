//! Where stream state lives between chunks. Token mode (default): sealed into the
//! response, sent back by the client. Redis mode (`sessions`): kept under a session id.

pub mod sessions;
pub mod token;

pub use token::{ContextKey, ContextKeys, TokenError};
