//! The messages between the handler, the engine host and its workers: postcard frames
//! (a 4-byte little-endian length, then the message) on Unix sockets, and the worker's
//! socket handed from the host to the handler with `SCM_RIGHTS`.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::asr::{ModelInfo, Segment, Transcript};

/// Largest frame accepted (30 s of f32 audio is under 2 MB; a long file is 300 s).
const MAX_FRAME: usize = 64 << 20;

/// What the engine host sends first: the model it loaded, or why it could not.
#[derive(Debug, Serialize, Deserialize)]
pub enum Loaded {
    Ready(ModelInfo),
    Failed(String),
}

/// The handler's requests to the engine host.
#[derive(Debug, Serialize, Deserialize)]
pub enum Control {
    /// Fork a worker; the answer is [`Spawned`] with the worker's socket attached.
    Spawn,
    /// Wait for worker `pid` (its socket closed) and say how it ended ([`Exited`]).
    Reap { pid: i32 },
}

/// A new worker: its pid (its socket travels alongside), or why it could not start.
#[derive(Debug, Serialize, Deserialize)]
pub enum Spawned {
    Worker { pid: i32 },
    Failed(String),
}

/// How a worker ended, in words (`killed by signal SIGSEGV`, `exited with status 1`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Exited(pub String);

/// The handler's calls to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum Call {
    Transcribe { samples: Vec<f32>, options: Options },
    Tokenize(String),
}

/// [`crate::asr::DecodeOptions`] on the wire (a listener becomes a flag).
#[derive(Debug, Serialize, Deserialize)]
pub struct Options {
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub translate: bool,
    pub temperature: f32,
    /// Whether to send each pass's segments as [`Answer::Progress`].
    pub progress: bool,
}

/// A worker's answers: any number of `Progress`, then the result of the call.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Progress(Vec<Segment>),
    Transcript(Result<Transcript, String>),
    Tokens(Vec<i32>),
}

/// Writes one frame.
pub fn send<T: Serialize>(mut socket: &UnixStream, message: &T) -> std::io::Result<()> {
    let body = postcard::to_allocvec(message).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    socket.write_all(&frame)
}

/// Reads one frame; `UnexpectedEof` when the other side is gone.
pub fn receive<T: DeserializeOwned>(mut socket: &UnixStream) -> std::io::Result<T> {
    let mut length = [0u8; 4];
    socket.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(std::io::Error::other(format!("a {length}-byte frame")));
    }
    let mut body = vec![0u8; length];
    socket.read_exact(&mut body)?;
    postcard::from_bytes(&body).map_err(std::io::Error::other)
}

/// Writes one frame with `fd` attached (the frame is small: one `sendmsg`).
pub fn send_with_fd<T: Serialize>(
    socket: &UnixStream,
    message: &T,
    fd: RawFd,
) -> std::io::Result<()> {
    let body = postcard::to_allocvec(message).map_err(std::io::Error::other)?;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let fds = [fd];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    if sent != frame.len() {
        return Err(std::io::Error::other("a short control message"));
    }
    Ok(())
}

/// Reads one small frame and the descriptor that came with it, if any (close-on-exec).
pub fn receive_with_fd<T: DeserializeOwned>(
    socket: &UnixStream,
) -> std::io::Result<(T, Option<OwnedFd>)> {
    let mut buffer = [0u8; 512];
    let mut space = nix::cmsg_space!(RawFd);
    let (read, fd) = {
        let mut io = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut io,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fd = None;
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: the kernel just gave this process the descriptor; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        (message.bytes, fd)
    };
    if read < 4 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let length = u32::from_le_bytes(buffer[..4].try_into().expect("4 bytes")) as usize;
    if read != 4 + length {
        return Err(std::io::Error::other("a control message split or too long"));
    }
    let message = postcard::from_bytes(&buffer[4..read]).map_err(std::io::Error::other)?;
    Ok((message, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_descriptors_cross_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &Call::Tokenize("hello".into())).unwrap();
        assert!(matches!(receive::<Call>(&b).unwrap(), Call::Tokenize(t) if t == "hello"));

        let (c, mut d) = UnixStream::pair().unwrap();
        send_with_fd(&a, &Spawned::Worker { pid: 42 }, c.as_raw_fd()).unwrap();
        drop(c);
        let (spawned, fd) = receive_with_fd::<Spawned>(&b).unwrap();
        assert!(matches!(spawned, Spawned::Worker { pid: 42 }));
        let mut passed = UnixStream::from(fd.unwrap());
        passed.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");

        drop(a);
        let eof = receive::<Call>(&b).unwrap_err();
        assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
