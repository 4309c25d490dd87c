use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;
use crate::user::{User, UserId};

/// A browser session (the server-side row behind the signed cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSession {
    /// Id.
    pub id: Uuid,
    /// Whose.
    pub user_id: UserId,
    /// When it stops being valid.
    pub expires_at: OffsetDateTime,
}

/// An API token's metadata; the token itself is shown once and stored only as a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Id.
    pub id: Uuid,
    /// The name the user gave it.
    pub name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last time it authenticated a request.
    pub last_used_at: Option<OffsetDateTime>,
}

/// Stores browser sessions and API tokens, by digest only.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait AuthRepository: Send + Sync {
    /// Stores a new browser session.
    async fn create_browser_session(
        &self,
        user: UserId,
        token_digest: Vec<u8>,
        expires_at: OffsetDateTime,
    ) -> Result<AuthSession>;
    /// The unexpired browser session with this digest, and its user.
    async fn find_browser_session(
        &self,
        token_digest: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<Option<(AuthSession, User)>>;
    /// Moves a browser session's expiry (sliding refresh).
    async fn extend_browser_session(&self, id: Uuid, expires_at: OffsetDateTime) -> Result<()>;
    /// Stores a pending OpenID Connect sign-in under a digest of its `state`.
    async fn create_pending_login(&self, state_digest: Vec<u8>, login: crate::ports::PendingLogin) -> Result<()>;
    /// Takes (reads and deletes, so it works once) the unexpired pending sign-in for a state.
    async fn take_pending_login(
        &self,
        state_digest: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<Option<crate::ports::PendingLogin>>;
    /// Revokes a browser session; revoking an unknown one is not an error.
    async fn delete_browser_session(&self, token_digest: Vec<u8>) -> Result<()>;
    /// Stores a new API token.
    async fn create_api_token(&self, user: UserId, name: String, token_digest: Vec<u8>) -> Result<ApiToken>;
    /// The user's tokens, newest first.
    async fn list_api_tokens(&self, user: UserId) -> Result<Vec<ApiToken>>;
    /// Deletes one of the user's tokens; `false` when the user has no such token.
    async fn delete_api_token(&self, user: UserId, id: Uuid) -> Result<bool>;
    /// The user owning the token with this digest, recording its use.
    async fn find_api_token_user(&self, token_digest: Vec<u8>, now: OffsetDateTime) -> Result<Option<User>>;
}
