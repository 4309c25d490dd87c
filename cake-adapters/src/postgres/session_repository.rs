use async_trait::async_trait;
use cake_core::ports::{NewSession, SessionRepository, SessionUpdate};
use cake_core::session::{
    Activity, Cursor, Limit, ListFilter, OwnerSummary, Page, RuntimeState, Session, SessionId, Status, Visibility,
};
use cake_core::user::UserId;
use cake_core::{CoreError, Result, error::Resource};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::db_err;

/// Sessions on PostgreSQL.
#[derive(Clone)]
pub struct PgSessionRepository {
    pool: PgPool,
}

impl PgSessionRepository {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Inserts the session row and returns it with its owner.
    async fn insert<'e>(db: impl sqlx::PgExecutor<'e>, s: &NewSession) -> Result<Session> {
        let row = sqlx::query_as!(
            SessionRow,
            r#"WITH s AS (
                 INSERT INTO sessions (id, owner_id, title, private, status, pending_prompt)
                 VALUES ($1, $2, $3, $4, 'provisioning', $5)
                 RETURNING *
               )
               SELECT s.id, s.title, s.private, s.status, s.activity, s.status_reason, s.version,
                      s.created_at, s.updated_at, u.id AS owner_id, u.name AS owner_name, u.email AS owner_email
               FROM s JOIN users u ON u.id = s.owner_id"#,
            s.id.0,
            s.owner.0,
            s.title.as_ref(),
            s.visibility.is_private(),
            s.pending_prompt.as_deref(),
        )
        .fetch_one(db)
        .await
        .map_err(db_err)?;
        row.try_into()
    }
}

/// One row of the sessions ⋈ users join, converted into the domain type by `TryFrom`.
#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    title: String,
    private: bool,
    status: String,
    activity: String,
    status_reason: Option<String>,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    owner_id: Uuid,
    owner_name: String,
    owner_email: String,
}

impl TryFrom<SessionRow> for Session {
    type Error = CoreError;
    fn try_from(r: SessionRow) -> Result<Self> {
        Ok(Session {
            id: SessionId(r.id),
            title: r.title,
            visibility: Visibility::from_private(r.private),
            owner: OwnerSummary { id: UserId(r.owner_id), name: r.owner_name, email: r.owner_email },
            status: Status::parse(&r.status)?,
            activity: Activity::parse(&r.activity)?,
            status_reason: r.status_reason,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Where a first page starts: after everything.
const PAGE_START: (OffsetDateTime, Uuid) =
    (OffsetDateTime::new_utc(time::macros::date!(9999 - 12 - 31), time::Time::MIDNIGHT), Uuid::max());

fn cursor_bounds(after: Option<Cursor>) -> Result<(OffsetDateTime, Uuid)> {
    match after {
        None => Ok(PAGE_START),
        Some(c) => {
            let ts = OffsetDateTime::from_unix_timestamp_nanos(i128::from(c.created_at_us) * 1_000)
                .map_err(|_| CoreError::invalid("cursor", "is out of range"))?;
            Ok((ts, c.id.0))
        }
    }
}

#[async_trait]
impl SessionRepository for PgSessionRepository {
    async fn create(&self, s: NewSession) -> Result<Session> {
        if s.grants.is_empty() {
            return Self::insert(&self.pool, &s).await;
        }
        // The session, its grants, its broker token and their audit records: all or nothing.
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let session = Self::insert(&mut *tx, &s).await?;
        let grants: Vec<Uuid> = s.grants.iter().map(|g| g.0).collect();
        sqlx::query!(
            "INSERT INTO session_credentials (session_id, credential_id) SELECT $1, unnest($2::uuid[])",
            s.id.0,
            &grants
        )
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let digest = s.broker_token_digest.as_deref().ok_or_else(|| CoreError::internal("grants without a token"))?;
        sqlx::query!("INSERT INTO session_broker_tokens (session_id, token_digest) VALUES ($1, $2)", s.id.0, digest)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query!(
            r#"INSERT INTO audit_log (action, actor_id, session_id, credential_id)
               SELECT $4, $1, $2, unnest($3::uuid[])"#,
            s.owner.0,
            s.id.0,
            &grants,
            cake_core::credential::AuditAction::CredentialGranted.as_str()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(session)
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>> {
        let row = sqlx::query_as!(
            SessionRow,
            r#"SELECT s.id, s.title, s.private, s.status, s.activity, s.status_reason, s.version,
                      s.created_at, s.updated_at, u.id AS owner_id, u.name AS owner_name, u.email AS owner_email
               FROM sessions s JOIN users u ON u.id = s.owner_id WHERE s.id = $1"#,
            id.0
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn runtime_state(&self, id: SessionId) -> Result<Option<RuntimeState>> {
        let row = sqlx::query!(
            "SELECT runtime_handle, opencode_session_id, pending_prompt FROM sessions WHERE id = $1",
            id.0
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| RuntimeState {
            handle: r.runtime_handle,
            opencode_session_id: r.opencode_session_id,
            pending_prompt: r.pending_prompt,
        }))
    }

    async fn list_visible(
        &self,
        viewer: UserId,
        filter: ListFilter,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page> {
        let (ts, id) = cursor_bounds(after)?;
        // One more than asked tells whether a next page exists. Each branch walks its own
        // index in order and stops after `take` rows, so a page costs O(limit) at any size.
        let take = i64::from(limit.get()) + 1;
        let (others_public, own_public, own_private) = match filter {
            ListFilter::All => (true, true, true),
            ListFilter::Public => (true, true, false),
            ListFilter::Private => (false, false, true),
        };
        let mut rows = sqlx::query_as!(
            SessionRow,
            r#"WITH page AS (
                 (SELECT id, owner_id, title, private, status, activity, status_reason, version, created_at, updated_at
                   FROM sessions
                   WHERE $6 AND NOT private AND owner_id <> $1 AND (created_at, id) < ($2, $3)
                   ORDER BY created_at DESC, id DESC LIMIT $4)
                 UNION ALL
                 (SELECT id, owner_id, title, private, status, activity, status_reason, version, created_at, updated_at
                   FROM sessions
                   WHERE owner_id = $1 AND (created_at, id) < ($2, $3)
                     AND (($7 AND NOT private) OR ($5 AND private))
                   ORDER BY created_at DESC, id DESC LIMIT $4)
                 ORDER BY created_at DESC, id DESC LIMIT $4
               )
               SELECT p.id AS "id!", p.title AS "title!", p.private AS "private!", p.status AS "status!",
                      p.activity AS "activity!", p.status_reason, p.version AS "version!",
                      p.created_at AS "created_at!", p.updated_at AS "updated_at!",
                      u.id AS owner_id, u.name AS owner_name, u.email AS owner_email
               FROM page p JOIN users u ON u.id = p.owner_id
               ORDER BY p.created_at DESC, p.id DESC"#,
            viewer.0,
            ts,
            id,
            take,
            own_private,
            others_public,
            own_public,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let more = rows.len() > limit.get() as usize;
        rows.truncate(limit.get() as usize);
        let items: Vec<Session> = rows.into_iter().map(TryInto::try_into).collect::<Result<_>>()?;
        let next_cursor = if more { items.last().map(Cursor::after) } else { None };
        Ok(Page { items, next_cursor })
    }

    async fn update(&self, id: SessionId, expected_version: i64, u: SessionUpdate) -> Result<Session> {
        let (set_reason, reason) = split(u.status_reason);
        let (set_handle, handle) = split(u.runtime_handle);
        let (set_oc, oc) = split(u.opencode_session_id);
        let (set_prompt, prompt) = split(u.pending_prompt);
        let row = sqlx::query_as!(
            SessionRow,
            r#"WITH s AS (
                 UPDATE sessions SET
                   title = COALESCE($3, title),
                   private = COALESCE($4, private),
                   status = COALESCE($5, status),
                   status_reason = CASE WHEN $6 THEN $7 ELSE status_reason END,
                   activity = COALESCE($8, activity),
                   runtime_handle = CASE WHEN $9 THEN $10 ELSE runtime_handle END,
                   opencode_session_id = CASE WHEN $11 THEN $12 ELSE opencode_session_id END,
                   pending_prompt = CASE WHEN $13 THEN $14 ELSE pending_prompt END,
                   version = version + 1,
                   updated_at = now()
                 WHERE id = $1 AND version = $2
                 RETURNING *
               )
               SELECT s.id, s.title, s.private, s.status, s.activity, s.status_reason, s.version,
                      s.created_at, s.updated_at, u.id AS owner_id, u.name AS owner_name, u.email AS owner_email
               FROM s JOIN users u ON u.id = s.owner_id"#,
            id.0,
            expected_version,
            u.title.as_ref().map(|t| t.as_ref()),
            u.visibility.map(Visibility::is_private),
            u.status.map(Status::as_str),
            set_reason,
            reason,
            u.activity.map(Activity::as_str),
            set_handle,
            handle,
            set_oc,
            oc,
            set_prompt,
            prompt,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        match row {
            Some(row) => row.try_into(),
            None => {
                let exists = sqlx::query_scalar!("SELECT version FROM sessions WHERE id = $1", id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                match exists {
                    Some(_) => Err(CoreError::Conflict {
                        code: "concurrent_update",
                        message: "the session was changed by another request; retry".into(),
                    }),
                    None => Err(CoreError::NotFound(Resource::Session)),
                }
            }
        }
    }

    async fn delete(&self, id: SessionId) -> Result<()> {
        sqlx::query!("DELETE FROM sessions WHERE id = $1", id.0).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn list_unsettled(&self) -> Result<Vec<SessionId>> {
        let ids = sqlx::query_scalar!("SELECT id FROM sessions WHERE status <> 'failed' ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(ids.into_iter().map(SessionId).collect())
    }

    async fn list_owned(&self, owner: UserId) -> Result<Vec<SessionId>> {
        let ids = sqlx::query_scalar!("SELECT id FROM sessions WHERE owner_id = $1 ORDER BY created_at", owner.0)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(ids.into_iter().map(SessionId).collect())
    }

    async fn list_statuses(&self) -> Result<Vec<(SessionId, Status)>> {
        let rows = sqlx::query!("SELECT id, status FROM sessions").fetch_all(&self.pool).await.map_err(db_err)?;
        rows.into_iter().map(|r| Ok((SessionId(r.id), Status::parse(&r.status)?))).collect()
    }
}

fn split<T>(v: Option<Option<T>>) -> (bool, Option<T>) {
    match v {
        None => (false, None),
        Some(inner) => (true, inner),
    }
}
