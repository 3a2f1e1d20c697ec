//! What waits for the tool's stdin: messages the session core queued and the bytes it handed
//! to the driver that the tool has not read yet, bounded in bytes; and the clock that tells a
//! tool slow to read from one that reads nothing. What the messages are and how they are
//! written is not this module's business.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::time::Instant;

/// Room beyond the bound for errors the relay itself answers the tool with (its own request
/// was too large): they never wait behind the client's input, and a tool that keeps sending
/// such requests without reading cannot grow the queue past it.
const RELAY_ROOM: usize = 1024 * 1024;

/// The queue to the tool's stdin.
#[derive(Debug)]
pub(crate) struct ToolQueue {
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    queued: usize,
    /// Bytes handed to the driver for stdin (newlines included) and not yet written.
    in_stdin: usize,
    /// Most bytes queued and handed out together (a single message may be larger).
    cap: usize,
    /// The tool's stdin cannot be written any more: nothing is queued.
    closed: bool,
    /// When the tool last took input, or when input started waiting for it.
    progress: Instant,
    /// Set when the tool has taken none of its waiting input for the shedding delay; cleared
    /// when it takes some.
    shedding: bool,
}

impl ToolQueue {
    pub(crate) fn new(cap: usize, now: Instant) -> ToolQueue {
        ToolQueue {
            queue: VecDeque::new(),
            queued: 0,
            in_stdin: 0,
            cap,
            closed: false,
            progress: now,
            shedding: false,
        }
    }

    /// Bytes waiting for the tool (queued or handed out, not written).
    pub(crate) fn held(&self) -> usize {
        self.queued + self.in_stdin
    }

    /// Whether input waits for the tool.
    pub(crate) fn waiting(&self) -> bool {
        self.held() > 0
    }

    /// Whether a message of `len` bytes from the client (and its newline) may be queued now.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        !self.closed && (!self.waiting() || self.held() + len < self.cap)
    }

    /// Whether an error the relay makes for the tool (`len` bytes) may be queued now.
    pub(crate) fn has_room_for_reply(&self, len: usize) -> bool {
        !self.closed && self.held() + len < self.cap + RELAY_ROOM
    }

    /// Whether the tool's stdin is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Queues a message (dropped once stdin is closed).
    pub(crate) fn push(&mut self, msg: Bytes, now: Instant) {
        if self.closed {
            return;
        }
        if !self.waiting() {
            // Nothing was waiting: the tool's clock starts now.
            self.progress = now;
        }
        self.queued += msg.len();
        self.queue.push_back(msg);
    }

    /// The next message for stdin (without its newline); it counts until written.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let msg = self.queue.pop_front()?;
        self.queued -= msg.len();
        self.in_stdin += msg.len() + 1;
        Some(msg)
    }

    /// `n` bytes reached the tool's stdin.
    pub(crate) fn wrote(&mut self, n: usize, now: Instant) {
        self.in_stdin = self.in_stdin.saturating_sub(n);
        self.progress = now;
        self.shedding = false;
    }

    /// The tool's stdin is gone: what waited is dropped, and nothing more is queued.
    pub(crate) fn close(&mut self) {
        self.queue.clear();
        self.queued = 0;
        self.in_stdin = 0;
        self.closed = true;
        self.shedding = false;
    }

    /// Since when input has waited with the tool taking none of it (`None`: nothing waits).
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        self.waiting().then_some(self.progress)
    }

    /// Whether requests are answered instead of queued.
    pub(crate) fn shedding(&self) -> bool {
        self.shedding && self.waiting()
    }

    /// The tool has taken nothing for the shedding delay. Returns whether this is news.
    pub(crate) fn start_shedding(&mut self) -> bool {
        !std::mem::replace(&mut self.shedding, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_with_one_message_always_allowed() {
        let t0 = Instant::now();
        let mut q = ToolQueue::new(100, t0);
        assert!(q.has_room(1000), "an empty queue takes any one message");
        q.push(Bytes::from(vec![b'a'; 1000]), t0);
        assert!(!q.has_room(1));
        let m = q.pop().expect("message");
        assert_eq!(m.len(), 1000);
        assert_eq!(q.held(), 1001, "handed out, not yet written");
        q.wrote(1001, t0);
        q.push(Bytes::from(vec![b'b'; 10]), t0);
        assert!(q.has_room(89) && !q.has_room(90));
        q.close();
        assert!(!q.has_room(1) && !q.has_room_for_reply(1));
    }
}
