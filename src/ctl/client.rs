//! The blocking control-socket client used by drbdadm.

use super::proto::{Request, Response, StreamLine};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the udrbd daemon at {path}: {source}\n(is `udrbd` running? Start it, or set UDRBD_RUN_DIR to its --run-dir)"
    )]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("lost the connection to the udrbd daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the udrbd daemon sent an answer this drbdadm does not understand: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Connects to the daemon and sends `req` as one JSON line.
fn send(socket: &Path, req: &Request) -> Result<UnixStream, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    Ok(s)
}

/// Sends one request and waits for its answer.
pub fn call(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let s = send(socket, req)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    Ok(serde_json::from_str(answer.trim_end())?)
}

/// An open event stream (`Request::Events`): one [`StreamLine`] per call.
#[derive(Debug)]
pub struct EventStream {
    rd: BufReader<UnixStream>,
    // Kept open: the daemon reads EOF on it as "the client left".
    _wr: UnixStream,
}

impl EventStream {
    /// The next line; None when the daemon closed the stream (it went away).
    pub fn next_line(&mut self) -> Result<Option<StreamLine>, ClientError> {
        let mut line = String::new();
        if self.rd.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(line.trim_end())?))
    }
}

/// Sends an event request and returns the stream of answers.
pub fn events(socket: &Path, req: &Request) -> Result<EventStream, ClientError> {
    let s = send(socket, req)?;
    let wr = s.try_clone()?;
    Ok(EventStream {
        rd: BufReader::new(s),
        _wr: wr,
    })
}
