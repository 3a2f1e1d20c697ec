//! The process's stdin and stdout as async streams. When they are pipes (as an IDE sets them
//! up), they are read and written with non-blocking I/O on the runtime itself; otherwise (a
//! terminal, a file) through tokio's blocking-thread adapters.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// An input stream for [`crate::run`].
pub type Input = Pin<Box<dyn AsyncRead + Send>>;
/// An output stream for [`crate::run`].
pub type Output = Pin<Box<dyn AsyncWrite + Send>>;

/// stdin and stdout; must be called inside a tokio runtime.
pub fn open() -> (Input, Output) {
    (input(), output())
}

#[cfg(unix)]
fn input() -> Input {
    use std::os::fd::AsFd;
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok());
    match pipe {
        Some(p) => Box::pin(p),
        None => Box::pin(tokio::io::stdin()),
    }
}

#[cfg(unix)]
fn output() -> Output {
    use std::os::fd::AsFd;
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok());
    match pipe {
        Some(p) => Box::pin(p),
        None => Box::pin(tokio::io::stdout()),
    }
}

#[cfg(not(unix))]
fn input() -> Input {
    Box::pin(tokio::io::stdin())
}

#[cfg(not(unix))]
fn output() -> Output {
    Box::pin(tokio::io::stdout())
}
