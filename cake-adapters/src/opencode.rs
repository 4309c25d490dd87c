//! [`OpenCodeClient`]: the control plane's HTTP + SSE client of one session's OpenCode
//! server (verified call sequence in `shared/opencode/README.md` §7).
//!
//! Every call carries the session's Basic-auth password. The event subscription reconnects
//! with capped exponential backoff, treats 30 s without a byte (OpenCode sends a heartbeat
//! every 10 s) as a dead connection, and after a reconnect yields
//! [`UpstreamEvent::Connected`] so the caller resynchronises: OpenCode's SSE has no ids, so
//! missed events cannot be replayed.

use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use cake_core::ports::{DataPlane, Endpoint, UpstreamEvent};
use cake_core::session::{Activity, PermissionId, PermissionReply};
use cake_core::{CoreError, Result};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// How long one ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence after which an event stream counts as dead.
const STREAM_IDLE: Duration = Duration::from_secs(30);
/// Consecutive failed (re)connects after which the data plane counts as gone (~45 s).
const MAX_RECONNECTS: u32 = 12;
/// First reconnect delay; doubles up to 5 s.
const FIRST_BACKOFF_MS: u64 = 250;

/// The OpenCode HTTP client.
#[derive(Clone)]
pub struct OpenCodeClient {
    http: reqwest::Client,
    max_reconnects: u32,
    first_backoff_ms: u64,
}

impl Default for OpenCodeClient {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenCodeClient {
    /// A client with short connect timeouts (a connection attempted before OpenCode listens
    /// can hang; see the OpenCode notes §2).
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self { http, max_reconnects: MAX_RECONNECTS, first_backoff_ms: FIRST_BACKOFF_MS }
    }

    /// Changes the reconnect policy: give up after `max` consecutive failures, waiting
    /// `first_backoff_ms` (doubling, capped at 5 s) between attempts.
    pub fn with_reconnects(mut self, max: u32, first_backoff_ms: u64) -> Self {
        self.max_reconnects = max;
        self.first_backoff_ms = first_backoff_ms;
        self
    }

    /// The underlying HTTP client, for the raw pass-through.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn request(&self, ep: &Endpoint, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", ep.base_url.trim_end_matches('/'), path))
            .basic_auth(&ep.username, Some(ep.password.expose_secret()))
    }

    async fn call(&self, builder: RequestBuilder, what: &str) -> Result<Option<Value>> {
        let resp = builder.timeout(CALL_TIMEOUT).send().await.map_err(|e| unreachable(what, &e))?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = resp.bytes().await.map_err(|e| unreachable(what, &e))?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let detail: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(match status {
                StatusCode::NOT_FOUND => CoreError::Conflict {
                    code: "upstream_not_found",
                    message: format!("OpenCode does not know this ({what}): {detail}"),
                },
                StatusCode::BAD_REQUEST => CoreError::invalid("request", format!("OpenCode refused {what}: {detail}")),
                _ => CoreError::Unavailable(format!("OpenCode answered {status} to {what}")),
            });
        }
        if !is_json {
            // Unknown OpenCode routes answer 200 with the web UI's HTML.
            return Err(CoreError::Unavailable(format!("OpenCode gave no JSON for {what}")));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| CoreError::Unavailable(format!("OpenCode sent bad JSON for {what}: {e}")))
    }
}

fn unreachable(what: &str, e: &reqwest::Error) -> CoreError {
    CoreError::Unavailable(format!("OpenCode did not answer {what}: {}", error_chain(e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Percent-encodes one path segment (OpenCode ids are `[A-Za-z0-9_]`, but be strict anyway).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[async_trait]
impl DataPlane for OpenCodeClient {
    async fn create_session(&self, ep: &Endpoint, title: &str) -> Result<String> {
        let v = self
            .call(self.request(ep, Method::POST, "/session").json(&json!({"title": title})), "create session")
            .await?
            .unwrap_or_default();
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CoreError::Unavailable("OpenCode returned a session without id".into()))
    }

    async fn prompt(&self, ep: &Endpoint, session: &str, text: &str) -> Result<()> {
        let body = json!({"parts": [{"type": "text", "text": text}]});
        let path = format!("/session/{}/prompt_async", seg(session));
        self.call(self.request(ep, Method::POST, &path).json(&body), "prompt").await?;
        Ok(())
    }

    async fn messages(&self, ep: &Endpoint, session: &str) -> Result<Value> {
        let path = format!("/session/{}/message", seg(session));
        Ok(self.call(self.request(ep, Method::GET, &path), "list messages").await?.unwrap_or(json!([])))
    }

    async fn abort(&self, ep: &Endpoint, session: &str) -> Result<()> {
        let path = format!("/session/{}/abort", seg(session));
        self.call(self.request(ep, Method::POST, &path), "abort").await?;
        Ok(())
    }

    async fn reply_permission(&self, ep: &Endpoint, permission: &PermissionId, reply: PermissionReply) -> Result<()> {
        let path = format!("/permission/{}/reply", seg(permission.as_ref()));
        let body = json!({"reply": reply.as_str()});
        self.call(self.request(ep, Method::POST, &path).json(&body), "permission reply").await?;
        Ok(())
    }

    async fn activity(&self, ep: &Endpoint, session: &str) -> Result<Activity> {
        let all = self.call(self.request(ep, Method::GET, "/session/status"), "session status").await?;
        // Idle sessions are absent from the map.
        Ok(all
            .as_ref()
            .and_then(|v| v.get(session))
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .and_then(|t| Activity::parse(t).ok())
            .unwrap_or(Activity::Idle))
    }

    fn subscribe(&self, ep: Endpoint) -> BoxStream<'static, UpstreamEvent> {
        let client = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<UpstreamEvent>(256);
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let err = match client.stream_once(&ep, &tx, &mut failures).await {
                    Ok(()) => return, // the receiver is gone
                    Err(e) => e,
                };
                failures += 1;
                if failures > client.max_reconnects {
                    let _ = tx.send(UpstreamEvent::Gone(err)).await;
                    return;
                }
                let backoff =
                    Duration::from_millis(client.first_backoff_ms.saturating_mul(1 << failures.min(5)).min(5_000));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }
}

impl OpenCodeClient {
    /// One connection's life: `Ok(())` when the receiver went away, `Err(reason)` when the
    /// connection failed or ended.
    async fn stream_once(
        &self,
        ep: &Endpoint,
        tx: &tokio::sync::mpsc::Sender<UpstreamEvent>,
        failures: &mut u32,
    ) -> std::result::Result<(), String> {
        let resp = self
            .request(ep, Method::GET, "/event")
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let ok = resp.status().is_success()
            && resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
        if !ok {
            return Err(format!("event stream refused with {}", resp.status()));
        }
        *failures = 0;
        if tx.send(UpstreamEvent::Connected).await.is_err() {
            return Ok(());
        }
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(STREAM_IDLE, body.next()) => c,
                _ = tx.closed() => return Ok(()),
            };
            let chunk = match chunk {
                Err(_) => return Err("no event or heartbeat for 30 s".into()),
                Ok(None) => return Err("event stream ended".into()),
                Ok(Some(Err(e))) => return Err(error_chain(&e)),
                Ok(Some(Ok(bytes))) => bytes,
            };
            for data in parser.push(&chunk) {
                let Ok(event) = serde_json::from_str::<Value>(&data) else { continue };
                if tx.send(UpstreamEvent::Event(event)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// A minimal `text/event-stream` parser: collects `data:` lines into one payload per event.
#[derive(Default)]
pub struct SseParser {
    buf: BytesMut,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the payloads of the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(pos + 1);
            let mut line = &line[..pos];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                self.data.push(String::from_utf8_lossy(rest).into_owned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_frames() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert_eq!(p.push(b":1}\n\ndata: x\r\n\r\n: comment\n\n"), vec!["{\"a\":1}", "x"]);
        assert_eq!(p.push(b"data: a\ndata: b\n\n"), vec!["a\nb"]);
    }

    /// A fake OpenCode `/event` that serves one event per connection, then hangs up.
    async fn flaky_event_server() -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut auth_headers = Vec::new();
            for n in 0..2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let len = sock.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..len]).to_string();
                auth_headers.extend(
                    req.lines().filter(|l| l.to_ascii_lowercase().starts_with("authorization:")).map(str::to_owned),
                );
                let event =
                    format!("data: {{\"type\":\"session.idle\",\"properties\":{{\"sessionID\":\"ses_{n}\"}}}}\n\n");
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                sock.write_all(head.as_bytes()).await.unwrap();
                sock.write_all(event.as_bytes()).await.unwrap();
                sock.shutdown().await.unwrap();
            }
            auth_headers
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn the_subscription_reconnects_and_asks_for_a_resync() {
        let (base_url, server) = flaky_event_server().await;
        let ep =
            Endpoint { base_url, username: "opencode".into(), password: secrecy::SecretString::from("pw".to_owned()) };
        let mut events = OpenCodeClient::new().subscribe(ep);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap());
        }
        assert_eq!(got[0], UpstreamEvent::Connected);
        assert!(matches!(&got[1], UpstreamEvent::Event(v) if v["properties"]["sessionID"] == "ses_0"));
        assert_eq!(got[2], UpstreamEvent::Connected, "a reconnect is announced so the caller resynchronises");
        assert!(matches!(&got[3], UpstreamEvent::Event(v) if v["properties"]["sessionID"] == "ses_1"));
        let auth = server.await.unwrap();
        assert_eq!(auth.len(), 2);
        assert!(auth.iter().all(|h| h.ends_with("Basic b3BlbmNvZGU6cHc=")), "{auth:?}");
    }

    #[tokio::test]
    async fn an_unreachable_data_plane_is_reported_gone() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ep = Endpoint {
            base_url: format!("http://127.0.0.1:{port}"),
            username: "opencode".into(),
            password: secrecy::SecretString::from("pw".to_owned()),
        };
        let mut events = OpenCodeClient::new().with_reconnects(3, 1).subscribe(ep);
        let last = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap();
        assert!(matches!(last, Some(UpstreamEvent::Gone(_))), "{last:?}");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("ses_abc"), "ses_abc");
        assert_eq!(seg("../x"), "%2E%2E%2Fx");
    }
}
