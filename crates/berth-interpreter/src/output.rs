//! Command output, kept within a limit however much a command writes.

use berth_sandbox::{ExecEvent, ExecStream, ExitStatus, SandboxError};

/// At most `limit` bytes of a stream, and a count of what was dropped.
#[derive(Clone, Debug, Default)]
pub struct Capped {
    data: Vec<u8>,
    omitted: u64,
    limit: usize,
}

impl Capped {
    pub fn new(limit: usize) -> Self {
        Capped {
            limit,
            ..Capped::default()
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.data.len());
        let kept = data.len().min(room);
        self.data.extend_from_slice(&data[..kept]);
        self.omitted += (data.len() - kept) as u64;
    }

    /// The text, with a note saying how much was left out.
    pub fn text(&self) -> String {
        with_note(String::from_utf8_lossy(&self.data).into_owned(), self.omitted)
    }
}

pub fn with_note(mut text: String, omitted: u64) -> String {
    if omitted > 0 {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[output truncated: {omitted} more bytes were not kept]\n"));
    }
    text
}

/// The exit code a shell would report: the code, or 128 + the signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    match (status.code, status.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Reads an exec to its end into `stdout` and `stderr` through `record`, which may share them.
pub async fn drain(mut stream: ExecStream, mut record: impl FnMut(ExecEvent)) -> Result<(), SandboxError> {
    while let Some(event) = stream.next().await? {
        record(event);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_limit_and_says_what_it_dropped() {
        let mut out = Capped::new(4);
        out.push(b"abc");
        out.push(b"defg");
        assert_eq!(out.text(), "abcd\n[output truncated: 3 more bytes were not kept]\n");
        assert_eq!(Capped::new(4).text(), "");
    }
}
