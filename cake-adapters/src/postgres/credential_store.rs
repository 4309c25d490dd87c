use async_trait::async_trait;
use cake_core::credential::{
    AuditAction, AuditEntry, BrokerGrant, CredentialId, CredentialKind, GitHost, LinkedCredential, NewAuditEntry,
    SealedCredential,
};
use cake_core::ports::{AuditLog, CredentialStore};
use cake_core::session::SessionId;
use cake_core::user::UserId;
use cake_core::{CoreError, Result};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::db_err;

/// Linked credentials (ciphertext only), session grants and the audit log on PostgreSQL.
#[derive(Clone)]
pub struct PgCredentialStore {
    pool: PgPool,
}

impl PgCredentialStore {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn linked(
    id: Uuid,
    owner: Uuid,
    kind: &str,
    hosts: Vec<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
) -> Result<LinkedCredential> {
    Ok(LinkedCredential {
        id: CredentialId(id),
        owner: UserId(owner),
        kind: CredentialKind::parse(kind).map_err(CoreError::internal)?,
        hosts: hosts.iter().map(|h| GitHost::parse(h)).collect::<Result<_>>().map_err(CoreError::internal)?,
        created_at,
        updated_at,
    })
}

#[async_trait]
impl CredentialStore for PgCredentialStore {
    async fn upsert(
        &self,
        id: CredentialId,
        owner: UserId,
        kind: CredentialKind,
        hosts: &[GitHost],
        ciphertext: Vec<u8>,
    ) -> Result<LinkedCredential> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.as_str().to_owned()).collect();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let r = sqlx::query!(
            r#"INSERT INTO linked_credentials (id, owner_id, kind, hosts, secret) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (owner_id, kind) DO UPDATE
                 SET hosts = EXCLUDED.hosts, secret = EXCLUDED.secret, updated_at = now()
               RETURNING id, owner_id, kind, hosts, created_at, updated_at"#,
            id.0,
            owner.0,
            kind.as_str(),
            &hosts,
            ciphertext
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query!(
            r#"INSERT INTO audit_log (action, actor_id, credential_id, detail)
               VALUES ($4, $1, $2, jsonb_build_object('hosts', $3::text[]))"#,
            owner.0,
            r.id,
            &r.hosts,
            AuditAction::CredentialLinked.as_str()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        linked(r.id, r.owner_id, &r.kind, r.hosts, r.created_at, r.updated_at)
    }

    async fn list(&self, owner: UserId) -> Result<Vec<LinkedCredential>> {
        let rows = sqlx::query!(
            r#"SELECT id, owner_id, kind, hosts, created_at, updated_at FROM linked_credentials
               WHERE owner_id = $1 ORDER BY created_at, id"#,
            owner.0
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(|r| linked(r.id, r.owner_id, &r.kind, r.hosts, r.created_at, r.updated_at)).collect()
    }

    async fn get(&self, id: CredentialId) -> Result<Option<LinkedCredential>> {
        let row = sqlx::query!(
            "SELECT id, owner_id, kind, hosts, created_at, updated_at FROM linked_credentials WHERE id = $1",
            id.0
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| linked(r.id, r.owner_id, &r.kind, r.hosts, r.created_at, r.updated_at)).transpose()
    }

    async fn delete(&self, owner: UserId, id: CredentialId) -> Result<bool> {
        let done = sqlx::query!(
            r#"WITH gone AS (DELETE FROM linked_credentials WHERE id = $1 AND owner_id = $2 RETURNING id)
               INSERT INTO audit_log (action, actor_id, credential_id)
               SELECT $3, $2, id FROM gone"#,
            id.0,
            owner.0,
            AuditAction::CredentialUnlinked.as_str()
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn granted(&self, session: SessionId) -> Result<Vec<LinkedCredential>> {
        let rows = sqlx::query!(
            r#"SELECT c.id, c.owner_id, c.kind, c.hosts, c.created_at, c.updated_at
               FROM session_credentials g JOIN linked_credentials c ON c.id = g.credential_id
               WHERE g.session_id = $1 ORDER BY c.created_at, c.id"#,
            session.0
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(|r| linked(r.id, r.owner_id, &r.kind, r.hosts, r.created_at, r.updated_at)).collect()
    }

    async fn grant_for_token(&self, digest: &[u8]) -> Result<Option<BrokerGrant>> {
        let Some(session) = sqlx::query!(
            r#"SELECT s.id, s.owner_id, s.status FROM session_broker_tokens t JOIN sessions s ON s.id = t.session_id
               WHERE t.token_digest = $1"#,
            digest
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        else {
            return Ok(None);
        };
        let rows = sqlx::query!(
            r#"SELECT c.id, c.owner_id, c.kind, c.hosts, c.secret, c.created_at, c.updated_at
               FROM session_credentials g JOIN linked_credentials c ON c.id = g.credential_id
               WHERE g.session_id = $1 ORDER BY c.created_at, c.id"#,
            session.id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let credentials = rows
            .into_iter()
            .map(|r| {
                Ok(SealedCredential {
                    credential: linked(r.id, r.owner_id, &r.kind, r.hosts, r.created_at, r.updated_at)?,
                    ciphertext: r.secret,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(BrokerGrant {
            session_id: SessionId(session.id),
            owner: UserId(session.owner_id),
            live: matches!(session.status.as_str(), "provisioning" | "starting" | "ready"),
            credentials,
        }))
    }

    async fn renew_broker_token(&self, session: SessionId, digest: Vec<u8>) -> Result<bool> {
        let done =
            sqlx::query!("UPDATE session_broker_tokens SET token_digest = $2 WHERE session_id = $1", session.0, digest)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl AuditLog for PgCredentialStore {
    async fn record(&self, e: NewAuditEntry) -> Result<()> {
        sqlx::query!(
            r#"INSERT INTO audit_log (action, actor_id, session_id, credential_id, detail)
               VALUES ($1, $2, $3, $4, $5)"#,
            e.action.as_str(),
            e.actor.map(|a| a.0),
            e.session.map(|s| s.0),
            e.credential.map(|c| c.0),
            e.detail
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn list(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query!(
            r#"SELECT id, at, action, actor_id, session_id, credential_id, detail FROM audit_log
               WHERE id < $1 ORDER BY id DESC LIMIT $2"#,
            before.unwrap_or(i64::MAX),
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                action: r.action,
                actor: r.actor_id.map(UserId),
                session: r.session_id.map(SessionId),
                credential: r.credential_id.map(CredentialId),
                detail: r.detail,
            })
            .collect())
    }
}
