use async_trait::async_trait;
use cake_core::Result;
use cake_core::ports::{NewUser, UserRepository};
use cake_core::user::{Email, Role, User, UserId};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::db_err;

/// Users on PostgreSQL.
#[derive(Clone)]
pub struct PgUserRepository {
    pool: PgPool,
}

impl PgUserRepository {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

pub(crate) fn user_from(id: Uuid, email: String, name: String, role: &str, created_at: OffsetDateTime) -> Result<User> {
    Ok(User { id: UserId(id), email, name, role: Role::parse(role)?, created_at })
}

#[async_trait]
impl UserRepository for PgUserRepository {
    async fn create(&self, user: NewUser) -> Result<User> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Serialise sign-ups so exactly one first user becomes admin.
        sqlx::query!("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await.map_err(db_err)?;
        let row = sqlx::query!(
            r#"INSERT INTO users (id, email, name, role, password_hash)
               VALUES ($1, $2, $3,
                       CASE WHEN EXISTS (SELECT 1 FROM users) THEN $4 ELSE 'admin' END,
                       $5)
               RETURNING id, email, name, role, created_at"#,
            Uuid::new_v4(),
            user.email.as_ref(),
            user.name.as_ref(),
            user.role.as_str(),
            user.password_hash,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        user_from(row.id, row.email, row.name, &row.role, row.created_at)
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<(User, Option<String>)>> {
        let row = sqlx::query!(
            "SELECT id, email, name, role, created_at, password_hash FROM users WHERE email = $1",
            email.as_ref()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| Ok((user_from(r.id, r.email, r.name, &r.role, r.created_at)?, r.password_hash))).transpose()
    }

    async fn get(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query!("SELECT id, email, name, role, created_at FROM users WHERE id = $1", id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| user_from(r.id, r.email, r.name, &r.role, r.created_at)).transpose()
    }

    async fn upsert_by_email(&self, user: NewUser) -> Result<User> {
        // Fast path: the user exists and needs no promotion (every header-auth browser's first
        // request lands here).
        if let Some((existing, _)) = self.find_by_email(&user.email).await?
            && (user.role != Role::Admin || existing.role == Role::Admin)
        {
            return Ok(existing);
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // The same lock as `create`: exactly one first user becomes admin, and concurrent
        // first requests of one email end with one row.
        sqlx::query!("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await.map_err(db_err)?;
        let row = sqlx::query!(
            r#"INSERT INTO users (id, email, name, role, password_hash)
               VALUES ($1, $2, $3,
                       CASE WHEN EXISTS (SELECT 1 FROM users) THEN $4 ELSE 'admin' END,
                       NULL)
               ON CONFLICT (email) DO UPDATE
                   SET role = CASE WHEN $4 = 'admin' THEN 'admin' ELSE users.role END
               RETURNING id, email, name, role, created_at"#,
            Uuid::new_v4(),
            user.email.as_ref(),
            user.name.as_ref(),
            user.role.as_str(),
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        user_from(row.id, row.email, row.name, &row.role, row.created_at)
    }

    async fn detach_password(&self, id: UserId) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query!("UPDATE users SET password_hash = NULL WHERE id = $1", id.0)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query!("DELETE FROM auth_sessions WHERE user_id = $1", id.0).execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query!("DELETE FROM api_tokens WHERE user_id = $1", id.0).execute(&mut *tx).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        tracing::warn!(
            user = %id.0,
            "an email was proven by a trusted sign-in method: the account's password, sessions and API tokens \
             from its earlier password sign-up are revoked"
        );
        Ok(())
    }

    async fn set_role(&self, id: UserId, role: Role) -> Result<()> {
        sqlx::query!("UPDATE users SET role = $2 WHERE id = $1", id.0, role.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn delete(&self, id: UserId) -> Result<bool> {
        let done = sqlx::query!("DELETE FROM users WHERE id = $1", id.0).execute(&self.pool).await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list(&self, limit: i64) -> Result<Vec<User>> {
        let rows = sqlx::query!("SELECT id, email, name, role, created_at FROM users ORDER BY email LIMIT $1", limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(|r| user_from(r.id, r.email, r.name, &r.role, r.created_at)).collect()
    }
}
