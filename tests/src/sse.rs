//! A small SSE client for the tests: reads `id:`/`event:`/`data:` frames from a response.

use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// One SSE frame.
#[derive(Debug, Clone)]
pub struct SseFrame {
    /// `id:`.
    pub id: Option<String>,
    /// `event:`.
    pub event: Option<String>,
    /// `data:` parsed as JSON.
    pub data: Value,
}

/// Reads frames from an event-stream response.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    /// Wraps a response.
    pub fn new(resp: reqwest::Response) -> Self {
        Self { stream: resp.bytes_stream().boxed(), buf: String::new() }
    }

    /// The next frame, or `None` when the stream ends or `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut frame = SseFrame { id: None, event: None, data: Value::Null };
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        frame.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        frame.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                frame.data = serde_json::from_str(&data.join("\n")).unwrap_or(Value::Null);
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next()).await.ok()??.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }

    /// Reads frames until `pred` matches one (returning it) or `timeout` passes.
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&SseFrame) -> bool,
    ) -> Option<(SseFrame, Vec<SseFrame>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next(left).await?;
            if pred(&frame) {
                return Some((frame, seen));
            }
            seen.push(frame);
        }
    }

    /// Whether the server closes the stream within `timeout` (frames before the end are
    /// skipped).
    pub async fn closes_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}
