//! Request payloads (InvokeAgentRuntime, up to 100 MB) read to the end before anyone sees them,
//! without holding them in memory.
//!
//! SigV4 signs the SHA-256 of the whole body, so no byte may reach an agent before the last one
//! has arrived and the signature checked out. The body is hashed as it arrives; the first
//! [`IN_MEMORY`] bytes stay in memory (almost every invocation), the rest go to an unnamed
//! temporary file in the data dir, which the kernel removes when the last handle closes. Once
//! verified, the payload streams to the agent from there.

use std::io::Write;
use std::path::Path;

use axum::body::Body;
use berth_runtime::{RequestBody, request_body};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

/// Bytes of a payload kept in memory before it spills to disk.
pub const IN_MEMORY: usize = 1024 * 1024;
/// Bytes read from or written to the spool file per blocking call.
const CHUNK: usize = 256 * 1024;

/// A payload read to the end.
pub struct Spooled {
    /// Lower-case hex SHA-256 of the whole payload.
    pub sha256: String,
    pub len: u64,
    content: Content,
}

enum Content {
    Memory(Bytes),
    File(std::fs::File),
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the payload is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("the request body could not be read: {0}")]
    Client(String),
    #[error("the payload could not be spooled to disk: {0}")]
    Disk(#[from] std::io::Error),
}

/// Reads `body` to the end (at most `limit` bytes), spilling past [`IN_MEMORY`] to a file in `dir`.
pub async fn spool(mut body: Body, limit: usize, dir: &Path) -> Result<Spooled, SpoolError> {
    let mut hasher = Sha256::new();
    let mut buffer = BytesMut::new();
    let mut file: Option<std::fs::File> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SpoolError::Client(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        len += data.len();
        if len > limit {
            return Err(SpoolError::TooLarge(limit));
        }
        hasher.update(&data);
        buffer.extend_from_slice(&data);
        if file.is_none() && len > IN_MEMORY {
            file = Some(tempfile::tempfile_in(dir)?);
        }
        if buffer.len() >= CHUNK
            && let Some(open) = file.take()
        {
            file = Some(write_blocking(open, buffer.split().freeze()).await?);
        }
    }
    let sha256 = hex::encode(hasher.finalize());
    let content = match file {
        None => Content::Memory(buffer.freeze()),
        Some(mut open) => {
            if !buffer.is_empty() {
                open = write_blocking(open, buffer.freeze()).await?;
            }
            // Back to the start for reading (a seek, not I/O).
            std::io::Seek::rewind(&mut open)?;
            Content::File(open)
        }
    };
    Ok(Spooled {
        sha256,
        len: len as u64,
        content,
    })
}

async fn write_blocking(mut file: std::fs::File, data: Bytes) -> std::io::Result<std::fs::File> {
    tokio::task::spawn_blocking(move || file.write_all(&data).map(|()| file))
        .await
        .map_err(std::io::Error::other)?
}

impl Spooled {
    /// The payload, if it is small enough to be in memory (what the SigV4 check reads).
    pub fn in_memory(&self) -> Option<&Bytes> {
        match &self.content {
            Content::Memory(bytes) => Some(bytes),
            Content::File(_) => None,
        }
    }

    /// The payload as a body that reads the spool file as it is sent.
    pub fn into_body(self) -> RequestBody {
        match self.content {
            Content::Memory(bytes) => request_body(bytes),
            Content::File(file) => {
                let chunks = futures::stream::try_unfold(file, |mut file| async move {
                    let (file, chunk) = tokio::task::spawn_blocking(move || read_chunk(&mut file).map(|c| (file, c)))
                        .await
                        .map_err(std::io::Error::other)??;
                    Ok::<_, std::io::Error>(chunk.map(|chunk| (http_body::Frame::data(chunk), file)))
                });
                http_body_util::StreamBody::new(chunks).boxed()
            }
        }
    }
}

fn read_chunk(file: &mut std::fs::File) -> std::io::Result<Option<Bytes>> {
    use std::io::Read;
    let mut chunk = vec![0u8; CHUNK];
    let read = file.read(&mut chunk)?;
    if read == 0 {
        return Ok(None);
    }
    chunk.truncate(read);
    Ok(Some(Bytes::from(chunk)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that arrives in 64 KiB frames, as from a socket.
    fn body_of(data: &[u8]) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> =
            data.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Body::from_stream(futures::stream::iter(frames))
    }

    async fn read_back(spooled: Spooled) -> Vec<u8> {
        spooled
            .into_body()
            .collect()
            .await
            .expect("readable")
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn small_payloads_stay_in_memory_and_large_ones_spill_to_disk_unchanged() {
        let dir = tempfile::tempdir().expect("temp dir");
        for size in [0, 10, IN_MEMORY, IN_MEMORY + 1, 5 * IN_MEMORY + 12_345] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let spooled = spool(body_of(&data), 10 * IN_MEMORY, dir.path())
                .await
                .expect("spooled");
            assert_eq!(spooled.sha256, hex::encode(Sha256::digest(&data)), "size {size}");
            assert_eq!(spooled.len, size as u64);
            assert_eq!(spooled.in_memory().is_some(), size <= IN_MEMORY, "size {size}");
            assert!(read_back(spooled).await == data, "size {size} came back changed");
        }
        // The spool file has no name: nothing is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[tokio::test]
    async fn a_payload_over_the_limit_is_refused_as_soon_as_it_crosses_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = vec![1u8; 3 * IN_MEMORY];
        let refused = spool(body_of(&data), 2 * IN_MEMORY, dir.path()).await;
        assert!(matches!(refused, Err(SpoolError::TooLarge(limit)) if limit == 2 * IN_MEMORY));
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_a_client_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let frames: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"partial")),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
        ];
        let broken = spool(Body::from_stream(futures::stream::iter(frames)), IN_MEMORY, dir.path()).await;
        assert!(matches!(broken, Err(SpoolError::Client(_))));
    }
}
