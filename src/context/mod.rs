//! Where stream state lives between chunks, behind one seam (`Store`): token mode (default)
//! seals it into the response for the client to send back (`token`); Redis mode keeps it
//! under a session id (`sessions`). Either way a chunk `load`s the state, runs, and `save`s
//! the new state with the reply; the errors are one `ContextError`.

pub mod sessions;
pub mod token;

pub use sessions::{SessionStore, StoreError};
pub use token::{ContextKey, ContextKeys, TokenError};

use crate::stream::StreamState;
use sessions::Commit;

/// Why a stream's state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("session_id must be 1-128 letters, digits or -_.:")]
    InvalidSessionId,
    #[error("session_id needs Redis sessions, which this service has not enabled (REDIS_URL); stream with the context token instead")]
    SessionsDisabled,
    #[error("the session store (Redis) is unavailable; retry the same chunk shortly")]
    Unavailable(#[source] StoreError),
    #[error("the stored session cannot be read (damaged, or stored by another version of the service); DELETE it and start again")]
    Corrupt,
    #[error("chunk seq={sent} does not follow the stream, which has processed {stored} chunks; send seq={}", stored + 1)]
    SequenceConflict { sent: u64, stored: u64 },
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl From<StoreError> for ContextError {
    fn from(e: StoreError) -> Self {
        tracing::error!(event = "redis_unavailable", error = %e);
        ContextError::Unavailable(e)
    }
}

/// Token mode's settings.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    /// The key that seals, and the keys that open.
    pub keys: &'a ContextKeys,
    /// A token's lifetime, from its stream's first chunk.
    pub ttl_seconds: u64,
    /// The largest token accepted.
    pub max_bytes: usize,
}

/// Where one stream's state is kept.
pub enum Store<'a> {
    /// In a sealed token that travels with the client.
    Token(Tokens<'a>),
    /// In Redis, under the client's session id.
    Session {
        id: String,
        sessions: &'a SessionStore,
    },
}

/// A stream's state as loaded for one chunk.
#[derive(Debug)]
pub enum Loaded {
    /// The state to continue from (a new stream's when none was stored or sent), and where
    /// it came from.
    State(Box<StreamState>, Continuation),
    /// The chunk was already committed (a retry): its reply, byte for byte.
    Replay { seq: u64, reply: String },
}

/// Where a loaded state came from, which its save needs.
#[derive(Debug, Clone, Copy)]
pub struct Continuation {
    /// When the stream's first token was issued (a token's lifetime counts from there).
    pub issued_at: u64,
    /// Chunks the store had committed when it was loaded (sessions commit against it).
    committed_seq: u64,
}

/// What a saved chunk answers: the reply it rendered, or (a retry that raced its original
/// and lost) the winner's reply.
#[derive(Debug, PartialEq)]
pub enum Saved {
    Reply(String),
    Replay { seq: u64, reply: String },
}

impl<'a> Store<'a> {
    /// The store a chunk's state lives in: the session it names, else the token.
    pub fn pick(
        tokens: Tokens<'a>,
        sessions: Option<&'a SessionStore>,
        session_id: Option<&str>,
    ) -> Result<Self, ContextError> {
        match session_id {
            None => Ok(Store::Token(tokens)),
            Some(id) if !sessions::valid_session_id(id) => Err(ContextError::InvalidSessionId),
            Some(id) => Ok(Store::Session {
                id: id.to_string(),
                sessions: sessions.ok_or(ContextError::SessionsDisabled)?,
            }),
        }
    }

    /// The session id, in Redis mode.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Store::Session { id, .. } => Some(id),
            Store::Token(_) => None,
        }
    }

    /// Loads the state chunk `seq` continues (`token`: what the client sent back, if any).
    /// A new stream starts from `fresh`. A chunk that does not follow the stream is a
    /// conflict, unless it is a retry of the session's last one, which is replayed.
    pub async fn load(
        &self,
        token: Option<&str>,
        seq: Option<u64>,
        now: u64,
        fresh: impl FnOnce() -> StreamState,
    ) -> Result<Loaded, ContextError> {
        let (state, from) = match self {
            Store::Session { id, sessions } => match sessions.load(id).await? {
                Some(stored) => {
                    if let Some(seq) = seq.filter(|&s| s <= stored.seq) {
                        return match stored.last_reply {
                            Some((reply_seq, reply)) if reply_seq == seq => {
                                Ok(Loaded::Replay { seq, reply })
                            }
                            _ => Err(ContextError::SequenceConflict {
                                sent: seq,
                                stored: stored.seq,
                            }),
                        };
                    }
                    let (issued_at, state) =
                        decode_state(&stored.state).ok_or(ContextError::Corrupt)?;
                    let from = Continuation {
                        issued_at,
                        committed_seq: stored.seq,
                    };
                    (state, from)
                }
                None => (fresh(), Continuation::new(now)),
            },
            Store::Token(tokens) => match token {
                Some(token) => {
                    let opened = token::open(tokens.keys, token, now, tokens.max_bytes)?;
                    (opened.state, Continuation::new(opened.issued_at))
                }
                None => (fresh(), Continuation::new(now)),
            },
        };
        if let Some(sent) = seq.filter(|&s| s != state.seq + 1) {
            return Err(ContextError::SequenceConflict {
                sent,
                stored: state.seq,
            });
        }
        Ok(Loaded::State(Box::new(state), from))
    }

    /// Saves the state a chunk produced with its reply. `render` makes the reply from the
    /// new token (token mode) or none (Redis), and returns it with the JSON of the final
    /// segments a session appends to its transcript.
    pub async fn save(
        &self,
        from: Continuation,
        state: &StreamState,
        render: impl FnOnce(Option<String>) -> (String, Vec<String>),
    ) -> Result<Saved, ContextError> {
        match self {
            Store::Token(tokens) => {
                let expires_at = from.issued_at.saturating_add(tokens.ttl_seconds);
                let sealed = token::seal(&tokens.keys.current, from.issued_at, expires_at, state);
                Ok(Saved::Reply(render(Some(sealed)).0))
            }
            Store::Session { id, sessions } => {
                let (reply, segments) = render(None);
                let blob = encode_state(from.issued_at, state);
                let commit =
                    sessions.commit(id, from.committed_seq, state.seq, &blob, &reply, &segments);
                match commit.await? {
                    Commit::Done => Ok(Saved::Reply(reply)),
                    Commit::Lost { current_seq } => {
                        // A concurrent request (a retry racing its original) committed first.
                        let winner = sessions.load(id).await?;
                        match winner.and_then(|w| w.last_reply) {
                            Some((seq, reply)) if seq == state.seq => {
                                Ok(Saved::Replay { seq, reply })
                            }
                            _ => Err(ContextError::SequenceConflict {
                                sent: state.seq,
                                stored: current_seq,
                            }),
                        }
                    }
                }
            }
        }
    }
}

impl Continuation {
    /// A stream that starts now, or one whose token was issued then.
    fn new(issued_at: u64) -> Self {
        Continuation {
            issued_at,
            committed_seq: 0,
        }
    }
}

/// A stream's state as a session stores it: the context version byte (see
/// [`token::VERSION`]), then `(issued_at, state)` postcard-encoded.
pub fn encode_state(issued_at: u64, state: &StreamState) -> Vec<u8> {
    let mut blob = vec![token::VERSION];
    blob.extend(postcard::to_stdvec(&(issued_at, state)).unwrap_or_default());
    blob
}

/// The `(issued_at, state)` of a stored session; `None` when it cannot be read (damaged,
/// or written by a build with another state layout).
pub fn decode_state(blob: &[u8]) -> Option<(u64, StreamState)> {
    match blob.split_first() {
        Some((&token::VERSION, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}
