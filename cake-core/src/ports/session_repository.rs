use async_trait::async_trait;

use crate::Result;
use crate::session::{
    Activity, Cursor, Limit, ListFilter, Page, RuntimeState, Session, SessionId, Status, Title, Visibility,
};
use crate::user::UserId;

/// A session about to be stored.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Id.
    pub id: SessionId,
    /// Owner.
    pub owner: UserId,
    /// Title.
    pub title: Title,
    /// Visibility.
    pub visibility: Visibility,
    /// A first prompt to send once the runtime is ready.
    pub pending_prompt: Option<String>,
    /// The owner's credentials granted to the session (already checked by the broker
    /// policy). The repository stores them with the session, in the same transaction, and
    /// records one `credential.granted` audit entry for each.
    pub grants: Vec<crate::credential::CredentialId>,
    /// The digest of the session's broker token; set exactly when `grants` is not empty.
    pub broker_token_digest: Option<Vec<u8>>,
}

/// A change to a session's state, applied only if the stored version still matches.
#[derive(Debug, Clone, Default)]
pub struct SessionUpdate {
    /// New title.
    pub title: Option<Title>,
    /// New visibility.
    pub visibility: Option<Visibility>,
    /// New status.
    pub status: Option<Status>,
    /// New status reason (`Some(None)` clears it).
    pub status_reason: Option<Option<String>>,
    /// New activity.
    pub activity: Option<Activity>,
    /// New runtime handle (`Some(None)` clears it).
    pub runtime_handle: Option<Option<serde_json::Value>>,
    /// New OpenCode session id.
    pub opencode_session_id: Option<Option<String>>,
    /// New pending prompt (`Some(None)` clears it).
    pub pending_prompt: Option<Option<String>>,
}

/// Stores sessions.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait SessionRepository: Send + Sync {
    /// Stores a new session in status `provisioning`.
    async fn create(&self, session: NewSession) -> Result<Session>;
    /// Gets a session, whoever owns it (the service applies the policy).
    async fn get(&self, id: SessionId) -> Result<Option<Session>>;
    /// The runtime side of a session.
    async fn runtime_state(&self, id: SessionId) -> Result<Option<RuntimeState>>;
    /// Lists the sessions `viewer` may see under `filter`, newest first, keyset-paginated.
    async fn list_visible(
        &self,
        viewer: UserId,
        filter: ListFilter,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page>;
    /// Applies `update` if the session's version is still `expected_version`; returns the new
    /// session, or `Conflict { code: "concurrent_update" }` if someone else changed it first,
    /// or `NotFound` if it is gone.
    async fn update(&self, id: SessionId, expected_version: i64, update: SessionUpdate) -> Result<Session>;
    /// Removes a session for good.
    async fn delete(&self, id: SessionId) -> Result<()>;
    /// Sessions whose runtime should exist or be torn down (statuses other than `failed`),
    /// for recovery when the control plane starts.
    async fn list_unsettled(&self) -> Result<Vec<SessionId>>;
    /// Ids of every session a user owns.
    async fn list_owned(&self, owner: crate::user::UserId) -> Result<Vec<SessionId>>;
    /// Every stored session's id and status, for runtimes that reconcile what runs against
    /// what should run (the Kubernetes runtime deletes pods of sessions that no longer exist).
    async fn list_statuses(&self) -> Result<Vec<(SessionId, Status)>>;
}
