//! Redis sessions: with `REDIS_URL` set and a `session_id` named, a stream's state lives in
//! Redis instead of the token, and its final segments are appended to the session's
//! transcript. Commits are compare-and-set on the sequence number (one Lua script), so a
//! retry racing its original can neither lose nor duplicate text: the loser is answered with
//! the winner's stored reply, or 409.
//!
//! Keys, all with the session TTL: `prepis:session:{id}` (hash: `seq`, `state`, `reply`,
//! `reply_seq`) and `prepis:session:{id}:segments` (list of segment JSON).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// Redis operations give up after this long (the client gets 503 and retries).
const TIMEOUT: Duration = Duration::from_secs(3);

const COMMIT: &str = r#"
local current = redis.call('HGET', KEYS[1], 'seq') or '0'
if current ~= ARGV[1] then return current end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'state', ARGV[3], 'reply', ARGV[4], 'reply_seq', ARGV[2])
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if #ARGV >= 6 or redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
return 'OK'
"#;

/// Redis is down or answering errors.
#[derive(Debug, thiserror::Error)]
#[error("Redis is unavailable: {0}")]
pub struct StoreError(String);

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError(e.to_string())
    }
}

/// A session as stored.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// Chunks processed.
    pub seq: u64,
    /// The encoded stream state.
    pub state: Vec<u8>,
    /// The reply to the last chunk, and its sequence number.
    pub last_reply: Option<(u64, String)>,
}

/// The outcome of a compare-and-set commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    Done,
    /// Another request committed first; the session is at this sequence number.
    Lost {
        current_seq: u64,
    },
}

/// The Redis session store, shared by all requests of an instance.
pub struct SessionStore {
    client: redis::Client,
    /// A multiplexed connection, made on first use and dropped on error.
    connection: Mutex<Option<MultiplexedConnection>>,
    /// Session lifetime after the last chunk, in seconds.
    ttl_seconds: u64,
    script: redis::Script,
}

impl SessionStore {
    /// Prepares a store for `url` (`redis://`, `rediss://` for TLS); connects lazily.
    pub fn new(url: &str, ttl_seconds: u64) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(SessionStore {
            client,
            connection: Mutex::new(None),
            ttl_seconds,
            script: redis::Script::new(COMMIT),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| StoreError("connection timed out".into()))??;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        match tokio::time::timeout(TIMEOUT, op(connection)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *self.connection.lock().await = None;
                Err(e.into())
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(StoreError("operation timed out".into()))
            }
        }
    }

    /// Loads a session, `None` if it does not exist.
    pub async fn load(&self, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let key = state_key(id);
        let fields: (Option<u64>, Option<Vec<u8>>, Option<String>, Option<u64>) = self
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("seq")
                    .arg("state")
                    .arg("reply")
                    .arg("reply_seq")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match fields {
            (Some(seq), Some(state), reply, reply_seq) => Some(StoredSession {
                seq,
                state,
                last_reply: reply_seq.zip(reply),
            }),
            _ => None,
        })
    }

    /// Commits a chunk if the session is still at `expected_seq`.
    pub async fn commit(
        &self,
        id: &str,
        expected_seq: u64,
        new_seq: u64,
        state: &[u8],
        reply: &str,
        segments: &[String],
    ) -> Result<Commit, StoreError> {
        let (key, list) = (state_key(id), segments_key(id));
        let ttl = self.ttl_seconds;
        let script = &self.script;
        let answer: String = self
            .run(|mut c| async move {
                let mut invocation = script.key(&key);
                invocation
                    .key(&list)
                    .arg(expected_seq.to_string())
                    .arg(new_seq.to_string())
                    .arg(state)
                    .arg(reply)
                    .arg(ttl);
                for s in segments {
                    invocation.arg(s);
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        if answer == "OK" {
            Ok(Commit::Done)
        } else {
            Ok(Commit::Lost {
                current_seq: answer.parse().unwrap_or(0),
            })
        }
    }

    /// All final segments of a session (JSON texts), `None` if the session does not exist.
    pub async fn segments(&self, id: &str) -> Result<Option<(u64, Vec<String>)>, StoreError> {
        let (key, list) = (state_key(id), segments_key(id));
        let (seq, segments): (Option<u64>, Vec<String>) = self
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("HGET")
                    .arg(&key)
                    .arg("seq")
                    .cmd("LRANGE")
                    .arg(&list)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(seq.map(|s| (s, segments)))
    }

    /// Removes a session; `false` if there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let (key, list) = (state_key(id), segments_key(id));
        let removed: u64 = self
            .run(|mut c| async move {
                redis::cmd("DEL")
                    .arg(&key)
                    .arg(&list)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(removed > 0)
    }
}

fn state_key(id: &str) -> String {
    format!("prepis:session:{id}")
}

fn segments_key(id: &str) -> String {
    format!("prepis:session:{id}:segments")
}

/// Session ids: 1–128 characters of letters, digits and `-_.:`.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_state_round_trips_and_other_versions_are_refused() {
        use crate::context::{decode_state, encode_state};
        let state = crate::stream::StreamState {
            seq: 3,
            tail: crate::stream::TailAudio::Pcm16(vec![1, 0, 255, 127]),
            ..Default::default()
        };
        let blob = encode_state(7, &state);
        assert_eq!(decode_state(&blob), Some((7, state)));
        let mut other = blob.clone();
        other[0] = crate::context::token::VERSION - 1;
        assert_eq!(decode_state(&other), None);
        assert_eq!(decode_state(&[]), None);
        assert_eq!(decode_state(&blob[..blob.len() - 1]), None);
    }

    #[test]
    fn session_ids_are_restricted() {
        assert!(valid_session_id("meeting-2026_11.24:a"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("a b"));
        assert!(!valid_session_id("x}{*"));
        assert!(!valid_session_id(&"a".repeat(129)));
    }
}
