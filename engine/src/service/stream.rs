//! A response body written by blocking code (an export): what is written goes out in chunks as it
//! is written, and a writer that fails ends the body in an error, so the client sees a cut
//! transfer (HTTP/1.1 without its last chunk) and never a short document that looks whole.

use std::io::Write;

use axum::body::{Body, Bytes};

/// How many bytes are handed to the connection at a time.
const CHUNK: usize = 64 << 10;

/// The body `write` produces, run on a blocking thread. `write`'s error is logged (it must name
/// what failed, never a secret) and cuts the body short with an error.
pub fn written<F>(write: F) -> Body
where
    F: FnOnce(&mut dyn Write) -> crate::Result<()> + Send + 'static,
{
    let (mut sender, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let (chunks, mut handed) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let writing = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            chunks,
            buffer: Vec::with_capacity(CHUNK),
        };
        write(&mut out)
    });
    tokio::spawn(async move {
        while let Some(chunk) = handed.recv().await {
            if sender.send_data(chunk.into()).await.is_err() {
                return; // the client left
            }
        }
        // The writer is done (its channel closed): whole, or the body ends in its error.
        let failed = match writing.await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(panicked) => format!("the writer stopped: {panicked}"),
        };
        tracing::warn!(error = %failed, "a streamed response was cut short");
        sender.abort(std::io::Error::other(failed));
    });
    Body::new(body)
}

/// Hands what is written to a channel in chunks of [`CHUNK`] bytes.
struct ChunkWriter {
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn hand_over(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.chunks
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.hand_over()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_whole_body_arrives_whole_in_chunks() {
        let body = written(|out| {
            for line in 0..20_000 {
                writeln!(out, "line {line}").unwrap();
            }
            out.flush()
                .map_err(|error| crate::Error::Usage(error.to_string()))
        });
        let bytes = body.collect().await.expect("a whole body").to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(text.lines().count(), 20_000, "more than one chunk's worth");
        assert_eq!(text.lines().last(), Some("line 19999"));
    }

    #[tokio::test]
    async fn a_writer_that_fails_midway_ends_the_body_in_an_error_not_a_short_document() {
        let body = written(|out| {
            out.write_all(&vec![b'x'; CHUNK * 2 + 10]).unwrap();
            Err(crate::Error::Usage("the store went away".into()))
        });
        let error = body.collect().await.expect_err("a cut body is an error");
        assert!(
            format!("{error:?}").contains("the store went away"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_writer_that_panics_ends_the_body_in_an_error() {
        let body = written(|out| {
            out.write_all(b"{\"user_id\":").unwrap();
            out.flush().unwrap();
            panic!("a part would not serialise");
        });
        assert!(body.collect().await.is_err());
    }
}
