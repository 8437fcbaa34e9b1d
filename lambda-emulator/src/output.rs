//! The function's stdout and stderr, line by line, into its log stream.
//!
//! Lambda logs what a handler printed before it answered ahead of that invocation's
//! `END` line. The pipes are read on their own tasks, so the invocation asks each
//! reader to [`Flush`] before it writes `END`: everything the function wrote before
//! answering is already in the pipe, and the reader passes exactly that much on.

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// A handle on one pipe's reader, to wait until what was written so far is logged.
#[derive(Clone)]
pub(crate) struct Flush(mpsc::UnboundedSender<oneshot::Sender<()>>);

impl Flush {
    /// Returns once every line in the pipe at the time of the call has been passed
    /// on, or the reader has stopped (the process closed its end).
    pub(crate) async fn written_so_far(&self) {
        let (ack, acked) = oneshot::channel();
        if self.0.send(ack).is_ok() {
            let _ = acked.await;
        }
    }
}

/// Reads `output` until it closes, giving each line to `emit`; stops early when
/// `emit` says there is no one left to tell.
pub(crate) fn forward<R>(output: R, emit: impl FnMut(String) -> bool + Send + 'static) -> Flush
where
    R: AsyncRead + AsRawFd + Unpin + Send + 'static,
{
    let (requests_tx, mut requests) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    tokio::spawn(async move {
        let fd = output.as_raw_fd();
        let mut lines = Lines {
            output,
            partial: Vec::new(),
            emit,
        };
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(ack) = request else {
                        while lines.read().await.is_some() {}
                        return;
                    };
                    let mut unread = bytes_in_pipe(fd);
                    while unread > 0 {
                        match lines.read().await {
                            Some(read) => unread = unread.saturating_sub(read),
                            None => return,
                        }
                    }
                    let _ = ack.send(());
                }
                read = lines.read() => if read.is_none() {
                    return;
                },
            }
        }
    });
    Flush(requests_tx)
}

struct Lines<R, E> {
    output: R,
    /// The start of a line whose newline has not been read yet.
    partial: Vec<u8>,
    emit: E,
}

impl<R: AsyncRead + Unpin, E: FnMut(String) -> bool> Lines<R, E> {
    /// Reads what is there and emits the lines it completes: `Some(bytes read)`, or
    /// `None` once the pipe is closed or no one is listening. Cancel-safe: a read that
    /// is dropped has taken nothing from the pipe.
    async fn read(&mut self) -> Option<usize> {
        let mut chunk = [0u8; 8192];
        let read = match self.output.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !self.partial.is_empty() {
                    let last = std::mem::take(&mut self.partial);
                    (self.emit)(text(&last));
                }
                return None;
            }
            Ok(read) => read,
        };
        self.partial.extend_from_slice(&chunk[..read]);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !(self.emit)(text(line)) {
                return None;
            }
        }
        Some(read)
    }
}

/// A line as the log shows it: invalid UTF-8 is replaced, not a reason to stop.
fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// How many bytes are waiting in a pipe; 0 when the kernel cannot say.
fn bytes_in_pipe(fd: RawFd) -> usize {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the
    // call, and `fd` is a pipe the caller keeps open.
    let status = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut waiting) };
    if status == 0 {
        usize::try_from(waiting).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_flush_passes_on_every_line_written_before_it() {
        let (mut writer, reader) = tokio::net::unix::pipe::pipe().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let flush = forward(reader, {
            let seen = Arc::clone(&seen);
            move |line| {
                seen.lock().unwrap().push(line);
                true
            }
        });
        for round in 0..50 {
            let lines: String = (0..20).map(|i| format!("{round}-{i}\r\n")).collect();
            writer.write_all(lines.as_bytes()).await.unwrap();
            flush.written_so_far().await;
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), (round + 1) * 20, "round {round}");
            assert_eq!(seen.last().unwrap(), &format!("{round}-19"));
        }
        writer.write_all(b"no newline \xff").await.unwrap();
        drop(writer);
        let last_line = || seen.lock().unwrap().last().cloned().unwrap();
        for _ in 0..200 {
            if last_line() != "49-19" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(last_line(), "no newline \u{fffd}");
    }
}
