//! PostgreSQL: every durable piece of state (DESIGN.md). Repositories use sqlx's checked
//! queries; the offline data in `.sqlx/` lets builds run without a database.

mod auth_repository;
pub mod changes;
mod credential_store;
pub mod embedded;
mod provider_repository;
mod session_repository;
mod settings_repository;
mod user_repository;

pub use auth_repository::PgAuthRepository;
pub use credential_store::PgCredentialStore;
pub use provider_repository::PgProviderRepository;
pub use session_repository::PgSessionRepository;
pub use settings_repository::PgSettingsRepository;
pub use user_repository::PgUserRepository;

use cake_core::CoreError;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use std::str::FromStr;
use std::time::Duration;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connects a pool to the database at `url` and runs pending migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(PgConnectOptions::from_str(url)?, max_connections).await
}

/// Connection options from the standard libpq environment variables (`PGHOST`, `PGPORT`,
/// `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, …), for deployments that hand the
/// database over as separate variables rather than one URL.
pub fn options_from_env() -> PgConnectOptions {
    PgConnectOptions::new()
}

/// Connects a pool with explicit options and runs pending migrations.
pub async fn connect_with(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    // Every query here is an indexed lookup or keyset page whose best plan does not depend on
    // the parameter values, so a generic plan is reused at once instead of re-planning each
    // execution (re-planning was a third of the cost of listing sessions).
    let options = options.application_name("cake-agents").options([("plan_cache_mode", "force_generic_plan")]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // A ping before every acquire doubles the round trips of short queries; broken
        // connections surface as errors on use instead, and the pool replaces them.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Maps a database error into the domain: named unique violations become conflicts with a
/// stable code, unreachable databases become `Unavailable`, the rest `Internal`.
pub(crate) fn db_err(e: sqlx::Error) -> CoreError {
    if let sqlx::Error::Database(db) = &e
        && db.constraint() == Some("users_email_key")
    {
        return CoreError::Conflict {
            code: "email_taken",
            message: "an account with this email already exists".into(),
        };
    }
    // A credential unlinked while a session naming it was being created.
    if let sqlx::Error::Database(db) = &e
        && db.constraint() == Some("session_credentials_credential_id_fkey")
    {
        return CoreError::NotFound(cake_core::error::Resource::Credential);
    }
    // Values the database refuses (a CHECK constraint, a data exception such as an invalid
    // byte sequence) are bad input, never a 500.
    if let sqlx::Error::Database(db) = &e
        && let Some(code) = db.code()
        && (code == "23514" || code.starts_with("22"))
    {
        return CoreError::invalid("input", "a value was refused by the database");
    }
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            CoreError::Unavailable(format!("database: {e}"))
        }
        other => CoreError::internal(other),
    }
}

/// A database error.
pub use sqlx::Error as DbError;
pub use sqlx::PgPool;
/// How to reach a PostgreSQL database (a URL parsed, or the `PG*` variables).
pub use sqlx::postgres::PgConnectOptions;

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool).await.map(|_| ())
}
