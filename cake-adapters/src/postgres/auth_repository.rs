use async_trait::async_trait;
use cake_core::Result;
use cake_core::ports::{ApiToken, AuthRepository, AuthSession, PendingLogin};
use cake_core::user::{User, UserId};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::db_err;
use super::user_repository::user_from;

/// Browser sessions and API tokens on PostgreSQL (digests only).
#[derive(Clone)]
pub struct PgAuthRepository {
    pool: PgPool,
}

impl PgAuthRepository {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl AuthRepository for PgAuthRepository {
    async fn create_browser_session(
        &self,
        user: UserId,
        token_digest: Vec<u8>,
        expires_at: OffsetDateTime,
    ) -> Result<AuthSession> {
        let id = Uuid::new_v4();
        // The user's expired sessions go when they get a new one.
        sqlx::query!("DELETE FROM auth_sessions WHERE user_id = $1 AND expires_at < now()", user.0)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        sqlx::query!(
            "INSERT INTO auth_sessions (id, user_id, token_digest, expires_at) VALUES ($1, $2, $3, $4)",
            id,
            user.0,
            token_digest,
            expires_at
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(AuthSession { id, user_id: user, expires_at })
    }

    async fn find_browser_session(
        &self,
        token_digest: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<Option<(AuthSession, User)>> {
        let row = sqlx::query!(
            r#"SELECT s.id AS session_id, s.expires_at, u.id, u.email, u.name, u.role, u.created_at
               FROM auth_sessions s JOIN users u ON u.id = s.user_id
               WHERE s.token_digest = $1 AND s.expires_at > $2"#,
            token_digest,
            now
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| {
            let user = user_from(r.id, r.email, r.name, &r.role, r.created_at)?;
            Ok((AuthSession { id: r.session_id, user_id: user.id, expires_at: r.expires_at }, user))
        })
        .transpose()
    }

    async fn extend_browser_session(&self, id: Uuid, expires_at: OffsetDateTime) -> Result<()> {
        sqlx::query!("UPDATE auth_sessions SET expires_at = $2 WHERE id = $1", id, expires_at)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn create_pending_login(&self, state_digest: Vec<u8>, login: PendingLogin) -> Result<()> {
        // Expired attempts are swept here, so the table stays small without a background job.
        sqlx::query!("DELETE FROM pending_logins WHERE expires_at < now()")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        sqlx::query!(
            r#"INSERT INTO pending_logins (state_digest, provider_id, nonce, code_verifier, callback_url, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6)"#,
            state_digest,
            login.provider_id,
            login.nonce,
            login.code_verifier_sealed,
            login.callback_url,
            login.expires_at
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn take_pending_login(&self, state_digest: Vec<u8>, now: OffsetDateTime) -> Result<Option<PendingLogin>> {
        let row = sqlx::query!(
            r#"DELETE FROM pending_logins WHERE state_digest = $1
               RETURNING provider_id, nonce, code_verifier, callback_url, expires_at"#,
            state_digest
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.filter(|r| r.expires_at > now).map(|r| PendingLogin {
            provider_id: r.provider_id,
            nonce: r.nonce,
            code_verifier_sealed: r.code_verifier,
            callback_url: r.callback_url,
            expires_at: r.expires_at,
        }))
    }

    async fn delete_browser_session(&self, token_digest: Vec<u8>) -> Result<()> {
        sqlx::query!("DELETE FROM auth_sessions WHERE token_digest = $1", token_digest)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn create_api_token(&self, user: UserId, name: String, token_digest: Vec<u8>) -> Result<ApiToken> {
        let row = sqlx::query!(
            r#"INSERT INTO api_tokens (id, user_id, name, token_digest) VALUES ($1, $2, $3, $4)
               RETURNING id, name, created_at, last_used_at"#,
            Uuid::new_v4(),
            user.0,
            name,
            token_digest
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(ApiToken { id: row.id, name: row.name, created_at: row.created_at, last_used_at: row.last_used_at })
    }

    async fn list_api_tokens(&self, user: UserId) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query!(
            r#"SELECT id, name, created_at, last_used_at FROM api_tokens
               WHERE user_id = $1 ORDER BY created_at DESC, id DESC"#,
            user.0
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|r| ApiToken { id: r.id, name: r.name, created_at: r.created_at, last_used_at: r.last_used_at })
            .collect())
    }

    async fn delete_api_token(&self, user: UserId, id: Uuid) -> Result<bool> {
        let done = sqlx::query!("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2", id, user.0)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn find_api_token_user(&self, token_digest: Vec<u8>, now: OffsetDateTime) -> Result<Option<User>> {
        // Record the use at most once a minute, so reads stay reads on a busy token.
        let row = sqlx::query!(
            r#"WITH t AS (
                 UPDATE api_tokens SET last_used_at = $2
                 WHERE token_digest = $1
                   AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')
               )
               SELECT u.id, u.email, u.name, u.role, u.created_at
               FROM api_tokens a JOIN users u ON u.id = a.user_id
               WHERE a.token_digest = $1"#,
            token_digest,
            now
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| user_from(r.id, r.email, r.name, &r.role, r.created_at)).transpose()
    }
}
