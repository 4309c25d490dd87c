use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::Result;
use crate::session::{Activity, PermissionId, PermissionReply};

use super::Endpoint;

/// One item of a session's upstream event subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamEvent {
    /// The subscription is (re)established: state may have changed meanwhile, resynchronise.
    Connected,
    /// One OpenCode event (`{id, type, properties}`).
    Event(Value),
    /// The data plane stayed unreachable through every retry; the subscription ends.
    Gone(String),
}

/// Talks to one session's OpenCode server.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait DataPlane: Send + Sync {
    /// Creates the OpenCode session (`POST /session`) and returns its id.
    async fn create_session(&self, endpoint: &Endpoint, title: &str) -> Result<String>;
    /// Sends a prompt without waiting for the answer (`prompt_async`).
    async fn prompt(&self, endpoint: &Endpoint, session: &str, text: &str) -> Result<()>;
    /// The transcript, `[{info, parts}]` exactly as OpenCode returns it.
    async fn messages(&self, endpoint: &Endpoint, session: &str) -> Result<Value>;
    /// Aborts the running prompt.
    async fn abort(&self, endpoint: &Endpoint, session: &str) -> Result<()>;
    /// Answers a permission request.
    async fn reply_permission(
        &self,
        endpoint: &Endpoint,
        permission: &PermissionId,
        reply: PermissionReply,
    ) -> Result<()>;
    /// What the agent is doing now (`GET /session/status`).
    async fn activity(&self, endpoint: &Endpoint, session: &str) -> Result<Activity>;
    /// Subscribes to the server's events, reconnecting with backoff; yields
    /// [`UpstreamEvent::Connected`] after every (re)connect.
    fn subscribe(&self, endpoint: Endpoint) -> BoxStream<'static, UpstreamEvent>;
}
