//! A fake OpenAI-compatible model: `POST /v1/chat/completions` with streaming chunks, as
//! OpenCode's `@ai-sdk/openai-compatible` provider calls it.
//!
//! What it answers depends on the last user message:
//! - contains `FAIL400`: HTTP 400 with an OpenAI error body;
//! - contains `FAIL429`: HTTP 429 (OpenCode retries with backoff);
//! - contains `RUNBASH`: a `bash` tool call running `echo cake-tool-ok`, then, once the tool
//!   result is in the conversation, the text `Tool finished.`;
//! - contains `RUNCMD:`: the same with the rest of the message as the command (what an agent
//!   in the session would run: `git credential fill`, `env`, …);
//! - anything else: the text `PONG from fake model`, streamed in several deltas.
//!
//! Requests without tools (OpenCode's title generation) get the title `Fake title`. Every
//! request is recorded (the `Authorization` header included) for assertions.

use std::sync::{Arc, Mutex};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{Body, EndpointExt, Response, Route, Server, handler, http::StatusCode, post};
use serde_json::{Value, json};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// A running fake model server.
pub struct FakeModel {
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeModel {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts the server on a given loopback port (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Route::new().at("/v1/chat/completions", post(chat)).data(requests.clone());
        let acceptor = TcpListener::bind(format!("127.0.0.1:{port}")).into_acceptor().await.unwrap();
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self { base_url: format!("http://127.0.0.1:{port}/v1"), requests, _server: server }
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let mut c = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    if finish.is_some() {
        c["usage"] = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    }
    format!("data: {c}\n\n")
}

fn stream(frames: Vec<String>) -> Response {
    let mut body = frames.concat();
    body.push_str("data: [DONE]\n\n");
    Response::builder()
        .content_type("text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_string(body))
}

fn text_reply(text: &str) -> Response {
    let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for word in text.split_inclusive(' ') {
        frames.push(chunk(json!({"content": word}), None));
    }
    frames.push(chunk(json!({}), Some("stop")));
    stream(frames)
}

#[handler]
async fn chat(req: &poem::Request, body: poem::web::Json<Value>, log: Data<&Arc<Mutex<Vec<Recorded>>>>) -> Response {
    let body = body.0;
    log.lock().unwrap().push(Recorded {
        authorization: req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
        body: body.clone(),
    });
    let messages = body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let has_tools = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if !has_tools {
        return text_reply("Fake title");
    }
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let tool_done = messages.last().and_then(|m| m.get("role")).and_then(Value::as_str) == Some("tool");
    if last_user.contains("FAIL400") {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .content_type("application/json")
            .body(json!({"error": {"message": "fake bad request", "type": "invalid_request_error"}}).to_string());
    }
    if last_user.contains("FAIL429") {
        return Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .content_type("application/json")
            .body(json!({"error": {"message": "fake rate limit", "type": "rate_limit"}}).to_string());
    }
    let command = match last_user.split_once("RUNCMD:") {
        Some((_, command)) => Some(command.trim().to_owned()),
        None if last_user.contains("RUNBASH") => Some("echo cake-tool-ok".to_owned()),
        None => None,
    };
    if let Some(command) = command
        && !tool_done
    {
        let args = json!({"command": command, "description": "Run a command"}).to_string();
        return stream(vec![
            chunk(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                       "function": {"name": "bash", "arguments": args}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
        ]);
    }
    if tool_done {
        return text_reply("Tool finished.");
    }
    text_reply("PONG from fake model")
}
