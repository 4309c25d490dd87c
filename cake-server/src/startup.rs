//! Builds the control plane from a [`Config`]: database (external or embedded), services,
//! runtime, HTTP routes; binds, reports the port, and shuts everything down in order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cake_adapters::crypto::{AesCipher, Argon2Hasher, HmacDeriver, RandomTokens};
use cake_adapters::header_auth::{HeaderAuth, HeaderAuthConfig};
use cake_adapters::jwks::JwksVerifier;
use cake_adapters::kubernetes::{KubeRuntime, KubeSettings, KubeStartError};
use cake_adapters::local::{LocalRuntime, LocalRuntimeConfig, default_opencode_bin};
use cake_adapters::oidc::{OidcClient, OidcConfig};
use cake_adapters::opencode::OpenCodeClient;
use cake_adapters::postgres::{
    self, DbError, PgAuthRepository, PgConnectOptions, PgCredentialStore, PgProviderRepository, PgSessionRepository,
    PgSettingsRepository, PgUserRepository, embedded::EmbeddedPostgres,
};
use cake_adapters::relay::BroadcastHub;
use cake_adapters::system::{RandomIds, SystemClock, TokioSpawner};
use cake_core::ports::{HeaderIdentity, OidcProvider, SessionRuntime};
use cake_core::ratelimit::Rate;
use cake_core::services::{
    AuthConfig, AuthService, CredentialDeps, CredentialService, ProviderService, SessionDeps, SessionService,
    SettingsService,
};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Redirect;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server, handler};
use secrecy::{ExposeSecret, SecretString};
use std::str::FromStr;
use tokio::task::JoinHandle;

use crate::config::{Config, RuntimeKind};
use crate::identity::CookieSigner;
use crate::metrics::Metrics;
use crate::state::{AppState, DbProbe};
use crate::{api, error, passthrough};

/// Largest accepted request body on `/api/*` (DESIGN.md: 413 `payload_too_large` above).
pub const MAX_BODY: usize = 1 << 20;

/// Why the control plane could not start; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The embedded PostgreSQL cluster failed.
    #[error("embedded PostgreSQL: {0}")]
    Embedded(#[from] postgres::embedded::EmbeddedError),
    /// The database could not be reached or migrated.
    #[error("database: {0}")]
    Database(String),
    /// A configuration value is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The session runtime could not start (e.g. no Kubernetes credentials).
    #[error("runtime: {0}")]
    Runtime(String),
    /// Binding or file-system trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running control plane.
pub struct Application {
    addr: SocketAddr,
    public_url: String,
    state: Arc<AppState>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
    broker_addr: Option<SocketAddr>,
    background: Vec<JoinHandle<()>>,
    local: Option<Arc<LocalRuntime>>,
    kube: Option<Arc<KubeRuntime>>,
    embedded: Option<EmbeddedPostgres>,
    pool: postgres::PgPool,
}

fn load_or_create_secret(config: &Config) -> Result<SecretString, StartupError> {
    if let Some(s) = &config.auth_secret {
        if s.expose_secret().len() < 16 {
            return Err(StartupError::Config("BETTER_AUTH_SECRET must be at least 16 characters".into()));
        }
        return Ok(s.clone());
    }
    let path = config.data_dir.join("secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if s.trim().len() >= 16 {
            return Ok(SecretString::from(s.trim().to_owned()));
        }
        return Err(StartupError::Config(format!(
            "{} is shorter than 16 characters; delete it to generate a new development secret",
            path.display()
        )));
    }
    use cake_core::ports::TokenGenerator;
    let secret = RandomTokens.generate();
    std::fs::create_dir_all(&config.data_dir)?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        std::io::Write::write_all(&mut f, secret.expose_secret().as_bytes())?;
    }
    tracing::warn!(path = %path.display(), "BETTER_AUTH_SECRET is not set: generated a development secret; set it in production");
    Ok(secret)
}

impl Application {
    /// Builds with the runtime named in the configuration.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with_runtime(config, None).await
    }

    /// Builds with a custom [`SessionRuntime`] (for embedding; `None` = the configured one).
    pub async fn build_with_runtime(
        config: Config,
        custom_runtime: Option<Arc<dyn SessionRuntime>>,
    ) -> Result<Self, StartupError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir = config.data_dir.canonicalize()?;
        let secret = load_or_create_secret(&config)?;
        // Bound first, so the public URL knows the real port when the listen port is 0.
        let acceptor = TcpListener::bind(config.listen).into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| StartupError::Config("listener has no address".into()))?;
        let broker_acceptor = match config.broker_listen {
            Some(listen) => {
                let acceptor = TcpListener::bind(listen).into_acceptor().await?;
                let bound = acceptor
                    .local_addr()
                    .first()
                    .and_then(|a| a.as_socket_addr().copied())
                    .ok_or_else(|| StartupError::Config("broker listener has no address".into()))?;
                Some((acceptor, bound))
            }
            None => None,
        };
        let broker_addr = broker_acceptor.as_ref().map(|(_, a)| *a);

        let (embedded, options) = match (&config.database_url, &config.pg_host) {
            (Some(url), _) => (None, PgConnectOptions::from_str(url.expose_secret()).map_err(database_error)?),
            (None, Some(host)) => {
                tracing::info!(host = %host, "connecting to PostgreSQL with the PG* environment variables");
                (None, postgres::options_from_env().host(host))
            }
            (None, None) => {
                let pg = EmbeddedPostgres::start(&data_dir.join("postgres")).await?;
                tracing::info!(port = pg.port(), "embedded PostgreSQL is running");
                let options = PgConnectOptions::from_str(&pg.url("cake")).map_err(database_error)?;
                (Some(pg), options)
            }
        };
        let pool = postgres::connect_with(options, config.database_max_connections).await.map_err(database_error)?;

        let prefix = path_prefix(&config.path_prefix)?;
        let public_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{addr}{prefix}"),
        };
        let broker_url = non_empty(&config.broker_url).map(|u| u.trim_end_matches('/').to_owned());
        let mut kube_runtime = None;
        let mut local = None;
        let runtime: Arc<dyn SessionRuntime> = match custom_runtime {
            Some(r) => r,
            None => match config.runtime {
                RuntimeKind::Local => {
                    let bin = config.opencode_bin.clone().unwrap_or_else(|| default_opencode_bin(Path::new(".")));
                    let mut rc = LocalRuntimeConfig::new(data_dir.join("sessions"), bin);
                    rc.ready_timeout =
                        Duration::from_secs(config.opencode_start_timeout.clamp(1, MAX_START_TIMEOUT_SECS));
                    rc.broker_url =
                        Some(broker_url.clone().unwrap_or_else(|| loopback_url(broker_addr.unwrap_or(addr), &prefix)));
                    rc.git_credential_helper = match non_empty(&config.git_credential_helper) {
                        Some(helper) => Some(helper),
                        None => own_git_credential_helper(),
                    };
                    let runtime = Arc::new(LocalRuntime::new(rc)?);
                    local = Some(runtime.clone());
                    runtime
                }
                RuntimeKind::Kubernetes => {
                    let mut settings = kube_settings(&config)?;
                    settings.broker_url = match (&broker_url, broker_addr) {
                        (Some(url), _) => Some(url.clone()),
                        (None, None) => Some(public_url.clone()),
                        // The public URL does not serve the broker then; where the pods reach
                        // the broker's listener only the operator knows.
                        (None, Some(_)) => {
                            return Err(StartupError::Config(
                                "CAKE_BROKER_LISTEN is set: set CAKE_BROKER_URL to the URL session pods reach it at"
                                    .into(),
                            ));
                        }
                    };
                    let repo = Arc::new(PgSessionRepository::new(pool.clone()));
                    let kube = Arc::new(KubeRuntime::start(settings, repo).await.map_err(|e| match e {
                        KubeStartError::Config(m) => StartupError::Config(m),
                        other => StartupError::Runtime(other.to_string()),
                    })?);
                    kube_runtime = Some(kube.clone());
                    kube
                }
            },
        };

        let cipher = Arc::new(AesCipher::from_secret(&secret));
        let tokens = Arc::new(RandomTokens);
        let providers = ProviderService::new(Arc::new(PgProviderRepository::new(pool.clone())), cipher.clone());
        let trusted_proxies = parse_cidrs(&config.header_auth.trusted_proxies, "CAKE_HEADER_AUTH_TRUSTED_PROXIES")?;
        let auth_config = auth_config(&config, &public_url)?;
        let session_ttl = auth_config.session_ttl;
        let mut auth = AuthService::new(
            Arc::new(PgUserRepository::new(pool.clone())),
            Arc::new(PgAuthRepository::new(pool.clone())),
            Arc::new(Argon2Hasher),
            tokens.clone(),
            Arc::new(SystemClock),
            auth_config,
        );
        let opencode = OpenCodeClient::new();
        let http = opencode.http().clone();
        if let Some(header) = header_auth(&config, trusted_proxies.clone(), &http)? {
            auth = auth.with_header_identity(header);
        }
        if let Some(oidc) = oidc(&config, &http)? {
            auth = auth.with_oidc(oidc, cipher.clone());
        }
        let runtime_survives = runtime.survives_restart();
        let credential_store = Arc::new(PgCredentialStore::new(pool.clone()));
        let credentials = CredentialService::new(CredentialDeps {
            store: credential_store.clone(),
            audit: credential_store,
            cipher: cipher.clone(),
            tokens: tokens.clone(),
            deriver: Arc::new(HmacDeriver::from_secret(&secret)),
            ids: Arc::new(RandomIds),
            clock: Arc::new(SystemClock),
        });
        let sessions = SessionService::new(SessionDeps {
            sessions: Arc::new(PgSessionRepository::new(pool.clone())),
            providers: providers.clone(),
            credentials: credentials.clone(),
            runtime,
            data_plane: Arc::new(opencode.clone()),
            hub: Arc::new(BroadcastHub::new(config.event_buffer)),
            tokens,
            ids: Arc::new(RandomIds),
            spawner: Arc::new(TokioSpawner::current()),
        });
        let probe_pool = pool.clone();
        let db_probe: DbProbe = Arc::new(move || {
            let pool = probe_pool.clone();
            Box::pin(async move { postgres::ping(&pool).await.map_err(|e| e.to_string()) })
        });
        let state = Arc::new(AppState {
            auth,
            sessions: sessions.clone(),
            providers,
            credentials,
            settings: SettingsService::new(Arc::new(PgSettingsRepository::new(pool.clone()))),
            cookies: Arc::new(
                CookieSigner::new(
                    SecretString::from(hex_key(&secret)),
                    public_url.starts_with("https://"),
                    session_ttl.whole_seconds(),
                )
                .with_path_prefix(&prefix),
            ),
            http,
            db_probe,
            metrics: Arc::new(Metrics::default()),
            allowed_origins: allowed_origins(&config, &public_url, addr),
            trusted_proxies: [parse_cidrs(&config.trusted_proxies, "CAKE_TRUSTED_PROXIES")?, trusted_proxies].concat(),
        });

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let main_scope = if broker_acceptor.is_some() { Scope::AllButBroker } else { Scope::All };
        let mut servers =
            vec![serve(acceptor, routes(state.clone(), &public_url, &prefix, main_scope), stopped.clone())];
        if let Some((acceptor, bound)) = broker_acceptor {
            tracing::info!(addr = %bound, "serving the credential broker on its own listener");
            servers.push(serve(acceptor, routes(state.clone(), &public_url, &prefix, Scope::BrokerOnly), stopped));
        }

        let mut background = Vec::new();
        {
            let s = sessions.clone();
            background.push(tokio::spawn(async move { s.watch_runtime().await }));
        }
        {
            // What other replicas (and this one) change reaches this replica's observers.
            let (on_change, on_gap) = (sessions.clone(), sessions.clone());
            background.push(tokio::spawn(postgres::changes::follow_session_changes(
                pool.clone(),
                move |id| {
                    let s = on_change.clone();
                    async move { s.refresh(id).await }
                },
                move || {
                    let s = on_gap.clone();
                    async move { s.refresh_observed().await }
                },
            )));
        }
        match sessions.recover().await {
            Ok(0) => {}
            Ok(n) if runtime_survives => tracing::info!(sessions = n, "serving the ready sessions found running"),
            Ok(n) => tracing::info!(sessions = n, "bringing sessions back after a restart"),
            Err(e) => tracing::error!(error = %e, "could not recover sessions"),
        }
        Ok(Self {
            addr,
            public_url,
            state,
            servers,
            stop,
            broker_addr,
            background,
            local,
            kube: kube_runtime,
            embedded,
            pool,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The credential broker's own bound address (`CAKE_BROKER_LISTEN`), if configured.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// The URL users reach the control plane at: `CAKE_PUBLIC_URL`, else the bound address
    /// with `CAKE_PATH_PREFIX`.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The services, for embedding and tests.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The database pool, for embedding and benchmarks.
    pub fn pool(&self) -> &postgres::PgPool {
        &self.pool
    }

    /// Stops in order: HTTP (5 s grace for open requests), event relays, data-plane processes
    /// (their directories stay, so sessions come back on the next start), the database pool,
    /// the embedded PostgreSQL cluster.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        for task in &self.background {
            task.abort();
        }
        self.state.sessions.shutdown();
        if let Some(local) = &self.local {
            local.shutdown().await;
        }
        if let Some(kube) = &self.kube {
            kube.shutdown().await;
        }
        self.pool.close().await;
        if let Some(pg) = &self.embedded
            && let Err(e) = pg.stop().await
        {
            tracing::error!(error = %e, "stopping embedded PostgreSQL failed");
        }
    }
}

/// The control plane over loopback, as local sessions reach it (a wildcard listen address is
/// reached on loopback).
fn loopback_url(addr: SocketAddr, prefix: &str) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}{prefix}", SocketAddr::new(ip, addr.port()))
}

/// This binary's `git-credential` subcommand as a git helper: `!` makes git run it through the
/// shell (with the action appended), so the path is quoted for the shell.
fn own_git_credential_helper() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    Some(git_helper_for(exe.to_str()?))
}

/// `!'<path>' git-credential`, for a git `credential.helper` value.
pub fn git_helper_for(path: &str) -> String {
    format!("!'{}' git-credential", path.replace('\'', "'\\''"))
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn parse_cidrs(list: &[String], var: &str) -> Result<Vec<ipnet::IpNet>, StartupError> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| StartupError::Config(format!("{var}: {s:?} is not a CIDR")))
        })
        .collect()
}

/// The origins allowed to write with the cookie (see [`AppState::allowed_origins`]).
fn allowed_origins(config: &Config, public_url: &str, addr: SocketAddr) -> Vec<String> {
    let mut origins = vec![cake_core::services::origin_of(public_url).to_owned()];
    origins.extend(
        config.trusted_origins.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()),
    );
    if config.public_url.is_none() {
        let port = addr.port();
        origins.extend([
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
        ]);
    }
    origins
}

fn auth_config(config: &Config, public_url: &str) -> Result<AuthConfig, StartupError> {
    // At most a year: expiries stay far from the calendar's end.
    let seconds = |n: u64, name: &str| {
        i64::try_from(n)
            .ok()
            .filter(|n| (1..=31_536_000).contains(n))
            .map(time::Duration::seconds)
            .ok_or_else(|| StartupError::Config(format!("{name} must be 1 to 31536000 seconds (a year)")))
    };
    let lower_list = |v: &[String]| -> Vec<String> {
        v.iter().map(|e| e.trim().trim_start_matches('@').to_ascii_lowercase()).filter(|e| !e.is_empty()).collect()
    };
    Ok(AuthConfig {
        admin_emails: lower_list(&config.admin_emails).into_iter().collect(),
        email_and_password: config.email_and_password_enabled,
        session_ttl: seconds(config.session_max_age, "CAKE_SESSION_MAX_AGE")?,
        session_update_age: seconds(config.session_update_age, "CAKE_SESSION_UPDATE_AGE")?,
        internal_email_domains: lower_list(&config.internal_email_domains),
        sign_in_per_account: Rate::new(config.sign_in_limit_per_account, time::Duration::minutes(15)),
        sign_in_per_ip: Rate::new(config.sign_in_limit_per_ip, time::Duration::minutes(1)),
        public_url: public_url.to_owned(),
        ..AuthConfig::default()
    })
}

fn header_auth(
    config: &Config,
    trusted_proxies: Vec<ipnet::IpNet>,
    http: &reqwest::Client,
) -> Result<Option<Arc<dyn HeaderIdentity>>, StartupError> {
    let h = &config.header_auth;
    if !h.enabled {
        return Ok(None);
    }
    let jwks_url = non_empty(&h.jwks_url);
    let auth = HeaderAuth::new(
        HeaderAuthConfig {
            email_header: non_empty(&h.email_header),
            email_claim: h.email_claim.trim().to_owned(),
            jwt_header: non_empty(&h.jwt_header),
            user_header: non_empty(&h.user_header),
            user_claim: h.user_claim.trim().to_owned(),
            trusted_proxies: trusted_proxies.clone(),
            jwt_issuer: non_empty(&h.jwt_issuer),
            jwt_audience: non_empty(&h.jwt_audience),
        },
        jwks_url.as_ref().map(|u| Arc::new(JwksVerifier::new(u.clone(), http.clone()))),
    );
    if !auth.is_effective() {
        tracing::warn!(
            "CAKE_HEADER_AUTH_ENABLED is true but neither CAKE_HEADER_AUTH_JWT_HEADER nor \
             CAKE_HEADER_AUTH_EMAIL_HEADER is set: header auth will sign nobody in"
        );
    }
    if let Some(url) = &jwks_url {
        warn_if_plain_http(url, "CAKE_HEADER_AUTH_JWKS_URL");
        if non_empty(&h.jwt_audience).is_none() {
            tracing::warn!(
                "CAKE_HEADER_AUTH_JWKS_URL is set without CAKE_HEADER_AUTH_JWT_AUDIENCE: tokens issued for any \
                 audience by that key set's issuer are accepted"
            );
        }
    }
    if trusted_proxies.is_empty() && jwks_url.is_none() {
        tracing::warn!(
            "header auth trusts the network boundary: any client that reaches this server directly \
             can claim any identity. Make sure only your proxy can reach it, or set \
             CAKE_HEADER_AUTH_TRUSTED_PROXIES and/or CAKE_HEADER_AUTH_JWKS_URL"
        );
    }
    Ok(Some(Arc::new(auth)))
}

/// Keys and tokens fetched over plain HTTP can be swapped on the way, except on loopback.
fn warn_if_plain_http(url: &str, var: &str) {
    let loopback = ["http://127.", "http://localhost", "http://[::1]"].iter().any(|p| url.starts_with(p));
    if url.starts_with("http://") && !loopback {
        tracing::warn!(url, "{var} is plain http: use https unless the network path is otherwise protected");
    }
}

fn oidc(config: &Config, http: &reqwest::Client) -> Result<Option<Arc<dyn OidcProvider>>, StartupError> {
    let o = &config.oidc;
    if !o.enabled {
        return Ok(None);
    }
    let need = |v: &Option<String>, name: &str| {
        non_empty(v).ok_or_else(|| StartupError::Config(format!("CAKE_OIDC_ENABLED is true but {name} is not set")))
    };
    let provider_id = o.provider_id.trim().to_owned();
    let valid_id = !provider_id.is_empty()
        && provider_id.len() <= 64
        && provider_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_id {
        return Err(StartupError::Config("CAKE_OIDC_PROVIDER_ID must be 1 to 64 letters, digits, '-' or '_'".into()));
    }
    let client_secret = o.client_secret.clone().filter(|s| !s.expose_secret().trim().is_empty());
    if let Some(issuer) = non_empty(&o.issuer) {
        warn_if_plain_http(&issuer, "CAKE_OIDC_ISSUER");
    }
    Ok(Some(Arc::new(OidcClient::new(
        OidcConfig {
            provider_id,
            issuer: need(&o.issuer, "CAKE_OIDC_ISSUER")?,
            client_id: need(&o.client_id, "CAKE_OIDC_CLIENT_ID")?,
            client_secret,
            scopes: o.scopes.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        },
        http.clone(),
    ))))
}

fn database_error(e: DbError) -> StartupError {
    StartupError::Database(e.to_string())
}

/// The Kubernetes runtime's settings; every JSON setting that does not parse is a startup
/// error naming its variable.
pub fn kube_settings(config: &Config) -> Result<KubeSettings, StartupError> {
    let invalid = |var: &str, problem: String| StartupError::Config(format!("{var}: {problem}"));
    let image =
        config.data_plane_image.clone().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            StartupError::Config("CAKE_DATA_PLANE_IMAGE is required with CAKE_RUNTIME=kubernetes".into())
        })?;
    let init_image = config.data_plane_init_image.clone().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        StartupError::Config("CAKE_DATA_PLANE_INIT_IMAGE is required with CAKE_RUNTIME=kubernetes".into())
    })?;
    let mut s = KubeSettings::for_images(&image, &init_image);
    s.namespace = config.session_namespace.clone().filter(|n| !n.trim().is_empty());
    s.instance = config.instance.clone();
    s.image_pull_policy = KubeSettings::parse_pull_policy(&config.data_plane_image_pull_policy)
        .map_err(|p| invalid("CAKE_DATA_PLANE_IMAGE_PULL_POLICY", p))?;
    s.service_account = config.data_plane_service_account.clone().filter(|n| !n.trim().is_empty());
    if let Some(raw) = config.data_plane_resources.as_deref().filter(|r| !r.trim().is_empty()) {
        s.resources = KubeSettings::parse_resources(raw).map_err(|p| invalid("CAKE_DATA_PLANE_RESOURCES", p))?;
    }
    if let Some(raw) = config.data_plane_node_selector.as_deref().filter(|r| !r.trim().is_empty()) {
        s.node_selector =
            KubeSettings::parse_node_selector(raw).map_err(|p| invalid("CAKE_DATA_PLANE_NODE_SELECTOR", p))?;
    }
    if let Some(raw) = config.data_plane_tolerations.as_deref().filter(|r| !r.trim().is_empty()) {
        s.tolerations = KubeSettings::parse_tolerations(raw).map_err(|p| invalid("CAKE_DATA_PLANE_TOLERATIONS", p))?;
    }
    s.image_pull_secrets =
        config.data_plane_image_pull_secrets.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
    if let Some(raw) = config.data_plane_volume_size_limits.as_deref().filter(|r| !r.trim().is_empty()) {
        s.volume_size_limits = KubeSettings::parse_volume_size_limits(raw)
            .map_err(|p| invalid("CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS", p))?;
    }
    s.api_url = config.kube_api_url.clone().filter(|u| !u.trim().is_empty());
    // Bounded: a deadline far in the future would overflow the clock's arithmetic.
    s.ready_timeout = Duration::from_secs(config.data_plane_start_timeout.clamp(1, MAX_START_TIMEOUT_SECS));
    s.pending_grace = Duration::from_secs(config.data_plane_pending_grace).min(s.ready_timeout);
    s.reconcile_interval = Duration::from_secs(config.reconcile_interval.clamp(1, MAX_RECONCILE_INTERVAL_SECS));
    Ok(s)
}

/// Longest `CAKE_DATA_PLANE_START_TIMEOUT` (and `CAKE_OPENCODE_START_TIMEOUT`) honoured: an
/// hour.
pub const MAX_START_TIMEOUT_SECS: u64 = 3600;
/// Longest `CAKE_RECONCILE_INTERVAL` honoured: a day.
pub const MAX_RECONCILE_INTERVAL_SECS: u64 = 86_400;

/// The cookie-signing key: purpose-bound, derived from the installation secret.
fn hex_key(secret: &SecretString) -> String {
    hex_encode(&cake_adapters::crypto::derive_key(secret, "cookie-signing"))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `CAKE_PATH_PREFIX` normalised: empty, or `/segment[/segment…]` without a trailing slash.
pub fn path_prefix(raw: &str) -> Result<String, StartupError> {
    let p = raw.trim().trim_end_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    let ok = p.starts_with('/')
        && !p.contains("//")
        && p.chars().all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c))
        && !p.split('/').any(|seg| seg == "." || seg == "..");
    if ok {
        Ok(p.to_owned())
    } else {
        Err(StartupError::Config(format!("CAKE_PATH_PREFIX {raw:?} must look like /agents (letters, digits, - . _ ~)")))
    }
}

/// Every route of the control plane, under `prefix` (`CAKE_PATH_PREFIX`, may be empty).
pub fn routes(state: Arc<AppState>, public_url: &str, prefix: &str, scope: Scope) -> impl Endpoint + use<> {
    let service = api::service(public_url);
    let spec = api::spec_json(&service, &format!("{prefix}/api"));
    // poem-openapi's Swagger UI page, showing the spec as served (with its security schemes).
    let docs_html = service.swagger_ui_html().replacen(&service.spec(), &spec, 1);
    let identity_state = state.clone();
    let metrics = state.metrics.clone();
    let docs = format!("{prefix}/api/docs");
    let inner = Route::new()
        .at("/api/sessions/:id/opencode/*rest", passthrough::passthrough)
        .at(
            "/api/openapi.json",
            poem::endpoint::make_sync(move |_| Response::builder().content_type("application/json").body(spec.clone())),
        )
        .at("/api/docs", poem::endpoint::make_sync(move |_| poem::web::Html(docs_html.clone())))
        .nest("/api", service.around(limit_body).around(error::envelope))
        .at("/readyz", readyz)
        .at("/metrics", metrics_endpoint)
        .at("/", poem::endpoint::make_sync(move |_| Redirect::see_other(docs.clone())));
    let routed = if prefix.is_empty() { inner.boxed() } else { Route::new().nest(prefix, inner).boxed() };
    let broker_path = format!("{prefix}/api/broker/");
    routed
        .around(move |ep, req| identity_resolve(identity_state.clone(), ep, req))
        // Outside identity resolution: a route of the other listener costs nothing.
        .around(move |ep, req| {
            let in_scope = scope.serves(req.uri().path().starts_with(&broker_path));
            async move {
                if in_scope {
                    Ok::<_, poem::Error>(ep.get_response(req).await)
                } else {
                    Ok(error::response(poem::http::StatusCode::NOT_FOUND, "not_found", "no such route"))
                }
            }
        })
        .data(state)
        .around(move |ep, req| {
            let metrics = metrics.clone();
            async move {
                let resp = ep.get_response(req).await;
                metrics.observe(resp.status().as_u16());
                Ok::<_, poem::Error>(resp)
            }
        })
        .around(log_request)
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (no `CAKE_BROKER_LISTEN`).
    All,
    /// Everything but the credential broker (the main listener when the broker has its own).
    AllButBroker,
    /// Only the credential broker (`CAKE_BROKER_LISTEN`).
    BrokerOnly,
}

impl Scope {
    fn serves(self, broker_route: bool) -> bool {
        match self {
            Scope::All => true,
            Scope::AllButBroker => !broker_route,
            Scope::BrokerOnly => broker_route,
        }
    }
}

/// Runs one listener until `stop` turns true (5 s of grace for open requests).
fn serve<E: Endpoint + 'static>(
    acceptor: impl Acceptor + 'static,
    app: E,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                app,
                async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                },
                Some(Duration::from_secs(5)),
            )
            .await
    })
}

/// Logs each request's method, path (never the query string, which can carry OAuth codes),
/// status and duration.
async fn log_request<E: Endpoint>(ep: E, req: Request) -> poem::Result<Response> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = ep.get_response(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, path, status, ms, "request");
    } else {
        tracing::info!(%method, path, status, ms, "request");
    }
    Ok(resp)
}

async fn identity_resolve<E: Endpoint>(state: Arc<AppState>, ep: E, req: Request) -> poem::Result<Response> {
    crate::identity::resolve(state, ep, req).await
}

/// Refuses bodies over [`MAX_BODY`] with 413, whether they announce their length or not.
async fn limit_body<E: Endpoint>(ep: E, mut req: Request) -> poem::Result<Response> {
    use futures::StreamExt;
    let too_large = || {
        error::response(
            poem::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(n) if n > MAX_BODY => return Ok(too_large()),
        Some(_) => {}
        None => {
            let mut stream = req.take_body().into_bytes_stream();
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| poem::Error::from_string(e.to_string(), poem::http::StatusCode::BAD_REQUEST))?;
                if buf.len() + chunk.len() > MAX_BODY {
                    return Ok(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            req.set_body(buf);
        }
    }
    Ok(ep.call(req).await?.into_response())
}

/// `GET /readyz`: 200 when PostgreSQL and the runtime answer, else 503 with the reason.
#[handler]
async fn readyz(req: &Request) -> Response {
    let Some(state) = req.data::<Arc<AppState>>() else {
        return poem::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let db = (state.db_probe)().await;
    let runtime = state.sessions.runtime_health().await.map_err(|e| e.to_string());
    let body = serde_json::json!({
        "database": db.as_ref().err().map_or("ok".to_owned(), Clone::clone),
        "runtime": runtime.as_ref().err().map_or("ok".to_owned(), Clone::clone),
    });
    let status = if db.is_ok() && runtime.is_ok() {
        poem::http::StatusCode::OK
    } else {
        poem::http::StatusCode::SERVICE_UNAVAILABLE
    };
    Response::builder().status(status).content_type("application/json").body(body.to_string())
}

/// `GET /metrics`: Prometheus text format.
#[handler]
async fn metrics_endpoint(req: &Request) -> Response {
    let text = req.data::<Arc<AppState>>().map(|s| s.metrics.render()).unwrap_or_default();
    Response::builder().content_type("text/plain; version=0.0.4").body(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube_config() -> Config {
        let mut c = Config::for_data_dir(std::env::temp_dir());
        c.data_plane_image = Some("cake/data-plane:1".into());
        c.data_plane_init_image = Some("cake/data-plane-init:1".into());
        c
    }

    #[test]
    fn huge_timeouts_are_clamped_instead_of_overflowing_the_clock() {
        let mut c = kube_config();
        c.data_plane_start_timeout = u64::MAX;
        c.data_plane_pending_grace = u64::MAX;
        c.reconcile_interval = u64::MAX;
        let s = kube_settings(&c).unwrap();
        assert_eq!(s.ready_timeout, Duration::from_secs(MAX_START_TIMEOUT_SECS));
        assert_eq!(s.pending_grace, s.ready_timeout, "the grace is bounded by the start timeout");
        assert_eq!(s.reconcile_interval, Duration::from_secs(MAX_RECONCILE_INTERVAL_SECS));
        // Deadlines computed from them are fine.
        let _ = tokio::time::Instant::now() + s.ready_timeout;
        let mut c = kube_config();
        c.data_plane_start_timeout = 0;
        c.data_plane_pending_grace = 500;
        let s = kube_settings(&c).unwrap();
        assert_eq!((s.ready_timeout, s.pending_grace), (Duration::from_secs(1), Duration::from_secs(1)));
    }

    #[test]
    fn volume_size_limits_come_from_their_variable() {
        let s = kube_settings(&kube_config()).unwrap();
        assert_eq!(s.volume_size_limits, cake_adapters::kubernetes::default_volume_size_limits());
        let mut c = kube_config();
        c.data_plane_volume_size_limits = Some(r#"{"workspace":"50Gi"}"#.into());
        assert_eq!(kube_settings(&c).unwrap().volume_size_limits.get("workspace").map(String::as_str), Some("50Gi"));
        c.data_plane_volume_size_limits = Some(r#"{"workspace":"lots"}"#.into());
        let err = kube_settings(&c).unwrap_err().to_string();
        assert!(err.contains("CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS"), "{err}");
    }
}
