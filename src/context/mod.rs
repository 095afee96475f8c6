//! Where stream state lives between chunks. Token mode (default): sealed into the
//! response, sent back by the client. (Redis sessions sit behind the same seam.)

pub mod token;

pub use token::{ContextKey, ContextKeys, TokenError};
