use async_trait::async_trait;
use cake_core::ports::SettingsRepository;
use cake_core::settings::{VisibilityDefaults, VisibilityPreferences};
use cake_core::user::UserId;
use cake_core::{CoreError, Result};
use sqlx::PgPool;

use super::db_err;

/// Organisation and user settings on PostgreSQL (JSON documents).
#[derive(Clone)]
pub struct PgSettingsRepository {
    pool: PgPool,
}

impl PgSettingsRepository {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl SettingsRepository for PgSettingsRepository {
    async fn org_defaults(&self) -> Result<Option<VisibilityDefaults>> {
        let row = sqlx::query_scalar!("SELECT default_visibility FROM org_settings WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|v| serde_json::from_value(v).map_err(CoreError::internal)).transpose()
    }

    async fn set_org_defaults(&self, defaults: VisibilityDefaults) -> Result<()> {
        let value = serde_json::to_value(defaults).map_err(CoreError::internal)?;
        sqlx::query!(
            r#"INSERT INTO org_settings (id, default_visibility) VALUES (1, $1)
               ON CONFLICT (id) DO UPDATE SET default_visibility = EXCLUDED.default_visibility, updated_at = now()"#,
            value
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn preferences(&self, user: UserId) -> Result<VisibilityPreferences> {
        let row = sqlx::query_scalar!("SELECT default_visibility FROM user_settings WHERE user_id = $1", user.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(v) => serde_json::from_value(v).map_err(CoreError::internal),
            None => Ok(VisibilityPreferences::default()),
        }
    }

    async fn set_preferences(&self, user: UserId, prefs: VisibilityPreferences) -> Result<()> {
        let value = serde_json::to_value(prefs).map_err(CoreError::internal)?;
        sqlx::query!(
            r#"INSERT INTO user_settings (user_id, default_visibility) VALUES ($1, $2)
               ON CONFLICT (user_id) DO UPDATE SET default_visibility = EXCLUDED.default_visibility, updated_at = now()"#,
            user.0,
            value
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}
