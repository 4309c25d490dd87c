use async_trait::async_trait;
use cake_core::Result;
use cake_core::ports::ProviderRepository;
use sqlx::PgPool;

use super::db_err;

/// The encrypted provider settings on PostgreSQL (one row).
#[derive(Clone)]
pub struct PgProviderRepository {
    pool: PgPool,
}

impl PgProviderRepository {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ProviderRepository for PgProviderRepository {
    async fn load(&self) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query_scalar!("SELECT ciphertext FROM provider_settings WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row)
    }

    async fn save(&self, ciphertext: Vec<u8>) -> Result<()> {
        sqlx::query!(
            r#"INSERT INTO provider_settings (id, ciphertext) VALUES (1, $1)
               ON CONFLICT (id) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = now()"#,
            ciphertext
        )
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}
