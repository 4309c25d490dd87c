//! Frames that flow from a session's data plane to its observers (DESIGN.md,
//! `GET /api/sessions/{id}/events`).
//!
//! Every frame has a per-session, strictly increasing id so a client that reconnects with
//! `Last-Event-ID` resumes where it stopped, from a bounded per-session buffer.

use std::sync::Arc;

use serde_json::Value;

use crate::session::Session;

/// What a frame carries.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameData {
    /// The session's new state (sent when status or activity changes, and once at connect).
    Status(Box<Session>),
    /// One OpenCode event (`{type, properties}`) that belongs to this session.
    OpenCode(Arc<Value>),
}

/// One frame of a session's event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Strictly increasing within a session; the SSE `id:`.
    pub id: u64,
    /// The payload.
    pub data: FrameData,
}

/// Extracts the OpenCode session id an OpenCode event belongs to, if any. Events of other
/// sessions and instance-wide events (`server.connected`, `server.heartbeat`) have none that
/// matches, and are never relayed to a session's observers.
pub fn opencode_session_of(event: &Value) -> Option<&str> {
    let props = event.get("properties")?;
    props
        .get("sessionID")
        .or_else(|| props.get("info").and_then(|i| i.get("sessionID")))
        .or_else(|| props.get("part").and_then(|p| p.get("sessionID")))
        .and_then(Value::as_str)
}

/// The OpenCode event type (`message.part.delta`, `session.idle`, …).
pub fn event_type(event: &Value) -> Option<&str> {
    event.get("type").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_session_of_each_event_shape() {
        let direct = json!({"type":"session.idle","properties":{"sessionID":"ses_1"}});
        let part = json!({"type":"x","properties":{"part":{"sessionID":"ses_2"}}});
        let info = json!({"type":"x","properties":{"info":{"sessionID":"ses_3"}}});
        let none = json!({"type":"server.heartbeat","properties":{}});
        assert_eq!(opencode_session_of(&direct), Some("ses_1"));
        assert_eq!(opencode_session_of(&part), Some("ses_2"));
        assert_eq!(opencode_session_of(&info), Some("ses_3"));
        assert_eq!(opencode_session_of(&none), None);
        assert_eq!(event_type(&none), Some("server.heartbeat"));
    }
}
