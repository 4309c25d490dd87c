//! Logging. Secrets never reach it: they travel as `SecretString`, whose `Debug` redacts, and
//! handlers log ids, never emails or tokens.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once (later calls are no-ops).
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
