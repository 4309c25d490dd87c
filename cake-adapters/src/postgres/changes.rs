//! The change feed: PostgreSQL announces every session update and deletion on the channel
//! [`SESSION_CHANGES`] (a trigger, migration `…_session_changes.sql`); [`follow_session_changes`]
//! listens and hands each changed id to the application (`SessionService::refresh`), so every
//! control-plane replica shows its observers what any replica changed.

use std::future::Future;
use std::time::Duration;

use cake_core::session::SessionId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// The notification channel.
pub const SESSION_CHANGES: &str = "cake_session_changes";

/// Listens for session changes until `pool` closes (or the task is dropped): `on_change` for each changed session,
/// `on_gap` whenever changes may have been missed (once connected, and after each reconnect).
/// Connection failures are retried with a capped backoff (at most 10 s between attempts).
pub async fn follow_session_changes<C, CF, G, GF>(pool: PgPool, on_change: C, on_gap: G)
where
    C: Fn(SessionId) -> CF,
    CF: Future<Output = ()>,
    G: Fn() -> GF,
    GF: Future<Output = ()>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        if pool.is_closed() {
            return;
        }
        match listen(&pool).await {
            Ok(mut listener) => {
                delay = Duration::from_millis(250);
                on_gap().await;
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => match uuid::Uuid::parse_str(n.payload()) {
                            Ok(id) => on_change(SessionId(id)).await,
                            Err(_) => tracing::warn!(payload = n.payload(), "ignoring a malformed session change"),
                        },
                        // The connection dropped and was re-established: changes may be lost.
                        Ok(None) => on_gap().await,
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "the session change feed failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => tracing::warn!(error = %e, "cannot listen for session changes; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// A listener on a connection of its own (same settings as the application's pool), so it
/// never takes one of the pool's connections for good: the handlers it calls use the pool.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(SESSION_CHANGES).await?;
    Ok(listener)
}
