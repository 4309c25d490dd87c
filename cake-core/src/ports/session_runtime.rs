use async_trait::async_trait;
use futures::stream::BoxStream;
use secrecy::SecretString;

use crate::Result;
use crate::session::SessionId;

/// What a runtime needs to start one session's OpenCode server.
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    /// The session.
    pub session_id: SessionId,
    /// `OPENCODE_CONFIG_CONTENT`: the OpenCode config, secrets only as `{env:…}` references.
    pub opencode_config: String,
    /// Secret env vars the config references (provider keys).
    pub env: Vec<(String, SecretString)>,
    /// `OPENCODE_SERVER_PASSWORD`: the per-session Basic-auth password.
    pub password: SecretString,
    /// The session's broker token, when its owner granted it credentials: the runtime passes
    /// it to the data plane as `CAKE_BROKER_TOKEN` (a secret, like the password), with
    /// `CAKE_BROKER_URL`, so `cake git-credential` can ask the control plane for them.
    pub broker_token: Option<SecretString>,
    /// The handle of a previous runtime of this session (after a control-plane restart), so
    /// the adapter can reuse its work dir and OpenCode history.
    pub previous: Option<serde_json::Value>,
}

/// Where and how to reach a running OpenCode server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:43121` or `http://10.0.3.7:4096`.
    pub base_url: String,
    /// Basic-auth user name (`opencode`).
    pub username: String,
    /// Basic-auth password.
    pub password: SecretString,
}

/// Something that happened to a runtime outside any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// A step on the way to ready ("pulling image …", "starting OpenCode"); the service shows
    /// it as the session's `statusReason` while the session is `provisioning` or `starting`,
    /// so a person waiting for a slow start sees why. Runtimes that start in a second (the
    /// local one) need not send any.
    Progress {
        /// Whose.
        session_id: SessionId,
        /// What is happening, in words a person understands.
        detail: String,
    },
    /// The runtime stopped on its own (process died, pod vanished, …).
    Failed {
        /// Whose.
        session_id: SessionId,
        /// A reason a person understands.
        reason: String,
    },
    /// A session has been `provisioning`, `starting` or `deleting` for longer than any start
    /// or deletion takes: the control-plane replica driving it is gone. Only runtimes whose
    /// sessions outlive a control plane ([`SessionRuntime::survives_restart`]) send it, from
    /// the one replica elected to (the Kubernetes runtime: the Lease holder); the service
    /// then starts the session again, or finishes deleting it.
    Stalled {
        /// Whose.
        session_id: SessionId,
    },
}

/// Runs data planes: one isolated OpenCode server per session (a local child process, a
/// Kubernetes pod, or whatever an embedding application brings).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait SessionRuntime: Send + Sync {
    /// Starts the runtime and returns its handle (persisted by the caller) as soon as it
    /// exists; OpenCode may still be booting. Idempotent for the same session.
    async fn provision(&self, spec: RuntimeSpec) -> Result<serde_json::Value>;
    /// Waits until OpenCode answers and returns how to reach it, or fails with a reason.
    async fn wait_ready(&self, handle: &serde_json::Value) -> Result<Endpoint>;
    /// How to reach a running runtime, or `None` if it is not running.
    async fn endpoint(&self, handle: &serde_json::Value) -> Result<Option<Endpoint>>;
    /// Called after a session failed, for any reason (the runtime's own failure, a lost
    /// connection to OpenCode, a step of the start that failed): stops what is of no further
    /// use but keeps the session's data (a failed session can be inspected or brought back).
    /// A runtime whose data lives only as long as the runtime (a pod's emptyDir) keeps a
    /// runtime that is still healthy. Idempotent.
    async fn stop(&self, session_id: SessionId) -> Result<()>;
    /// Stops the runtime and removes everything it owns. Idempotent.
    async fn teardown(&self, session_id: SessionId, handle: Option<serde_json::Value>) -> Result<()>;
    /// Runtime failures as they happen; the service turns them into `failed` sessions.
    fn events(&self) -> BoxStream<'static, RuntimeEvent>;
    /// Whether the runtime backend answers (for `/readyz`).
    async fn health(&self) -> Result<()>;
    /// Whether runtimes keep running when the control plane stops, and are served by any
    /// control-plane replica (Kubernetes pods), rather than ending with the process that
    /// started them (local child processes). A control plane that starts then leaves such
    /// sessions as they are — another replica may be serving or starting them — instead of
    /// provisioning them again.
    fn survives_restart(&self) -> bool {
        false
    }
    /// Whether a request from `ip` comes from a data plane of this runtime (a session pod's
    /// IP): such requests run code an agent wrote, so identity headers from them are never
    /// trusted (header auth). Runtimes that cannot tell (the local one: sessions share the
    /// loopback address) answer `false`.
    fn is_data_plane_address(&self, _ip: std::net::IpAddr) -> bool {
        false
    }
}
