//! What every handler shares.

use std::sync::Arc;

use cake_core::services::{AuthService, CredentialService, ProviderService, SessionService, SettingsService};
use futures::future::BoxFuture;

use crate::identity::CookieSigner;
use crate::metrics::Metrics;

/// Checks that the database answers (for `/readyz`).
pub type DbProbe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The application services and HTTP-level settings, cloned into every API struct.
#[derive(Clone)]
pub struct AppState {
    /// Users, browser sessions, API tokens.
    pub auth: AuthService,
    /// Sessions and their data planes.
    pub sessions: SessionService,
    /// Model providers.
    pub providers: ProviderService,
    /// Linked credentials, the broker and the audit log.
    pub credentials: CredentialService,
    /// Organisation and user settings.
    pub settings: SettingsService,
    /// Signs and verifies the session cookie.
    pub cookies: Arc<CookieSigner>,
    /// HTTP client for the raw OpenCode pass-through.
    pub http: reqwest::Client,
    /// Database probe.
    pub db_probe: DbProbe,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Origins whose pages may write with the cookie: `CAKE_PUBLIC_URL`'s, `CAKE_TRUSTED_ORIGINS`,
    /// and, when no public URL is configured, the loopback names of the bound port.
    pub allowed_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` names the client (`CAKE_TRUSTED_PROXIES` and
    /// `CAKE_HEADER_AUTH_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}
