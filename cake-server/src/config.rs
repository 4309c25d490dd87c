//! The one typed configuration of the control plane, read from flags and environment
//! variables. Each field's doc comment is what `cake serve --help` prints; env names are
//! DESIGN.md's ("Configuration") and the seeds' exactly.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

/// Where session data planes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// One `opencode serve` child process per session on this machine (the embedded default).
    Local,
    /// One pod per session in a Kubernetes cluster (CAKE_SESSION_NAMESPACE, CAKE_DATA_PLANE_*).
    Kubernetes,
}

impl RuntimeKind {
    /// `Kubernetes` when this process runs in a Kubernetes pod, else `Local`.
    pub fn detect() -> Self {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty()) {
            Self::Kubernetes
        } else {
            Self::Local
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Kubernetes => "kubernetes",
        })
    }
}

/// `cake serve` settings.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (use 0.0.0.0:8080 in a container; port 0 picks a free port).
    #[arg(long, env = "CAKE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The external URL users reach the control plane at. Decides the cookies' Secure flag
    /// (https) and OAuth callback URLs. Defaults to http://<listen>.
    #[arg(long, env = "CAKE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Serve everything under this path (e.g. /agents: the API at /agents/api, probes at
    /// /agents/readyz), for a control plane sharing a host with other apps. Include it in
    /// CAKE_PUBLIC_URL too.
    #[arg(long, env = "CAKE_PATH_PREFIX", default_value = "")]
    pub path_prefix: String,

    /// Directory for the embedded PostgreSQL cluster, local sessions' work dirs and the
    /// generated development secret.
    #[arg(long, env = "CAKE_DATA_DIR", default_value = "./.cake")]
    pub data_dir: PathBuf,

    /// External PostgreSQL (postgres://user:pass@host/db). Unset: with PGHOST set, the
    /// standard libpq variables are used instead; else an embedded cluster is run in
    /// $CAKE_DATA_DIR/postgres, started and stopped with the server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// External PostgreSQL host, used when DATABASE_URL is unset: the connection then comes
    /// from the standard libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE and
    /// PGSSLMODE (what the Helm chart's externalDatabase.existingSecretEnv maps from a Secret).
    #[arg(long, env = "PGHOST")]
    pub pg_host: Option<String>,

    /// Largest number of PostgreSQL connections this process opens.
    #[arg(long, env = "CAKE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Where data planes run. Default: kubernetes inside a Kubernetes pod (KUBERNETES_SERVICE_HOST
    /// is set), else local.
    #[arg(long, env = "CAKE_RUNTIME", value_enum, default_value_t = RuntimeKind::detect())]
    pub runtime: RuntimeKind,

    /// The OpenCode binary the local runtime starts (default: the copy script/setup installs
    /// under .tools/, else `opencode` on PATH).
    #[arg(long, env = "CAKE_OPENCODE_BIN")]
    pub opencode_bin: Option<PathBuf>,

    /// The control plane's URL as session runtimes reach it, for `cake git-credential` in
    /// sessions granted credentials (CAKE_BROKER_URL in the data plane). Default: the bound
    /// address over loopback with the local runtime; CAKE_PUBLIC_URL with Kubernetes (the
    /// chart sets the in-cluster Service URL).
    #[arg(long, env = "CAKE_BROKER_URL")]
    pub broker_url: Option<String>,

    /// A second address serving only the credential broker (`/api/broker/*`), e.g.
    /// 0.0.0.0:8081; the main listener then answers the broker routes with 404. Lets a
    /// cluster expose the broker to session pods without the rest of the API, and keeps it
    /// off the public ingress. Unset: the broker is served on CAKE_LISTEN.
    #[arg(long, env = "CAKE_BROKER_LISTEN")]
    pub broker_listen: Option<SocketAddr>,

    /// The git credential helper the local runtime configures in sessions granted credentials,
    /// as git's `credential.helper` value (default: this `cake` binary's `git-credential`
    /// subcommand, `!'/path/to/cake' git-credential`).
    #[arg(long, env = "CAKE_GIT_CREDENTIAL_HELPER")]
    pub git_credential_helper: Option<String>,

    /// Seconds OpenCode may take to start before the session is marked failed.
    #[arg(long, env = "CAKE_OPENCODE_START_TIMEOUT", default_value_t = 90)]
    pub opencode_start_timeout: u64,

    /// Kubernetes runtime: namespace of the session pods. Default: the control plane's own
    /// namespace (from its service account), else the kube config's default namespace.
    #[arg(long, env = "CAKE_SESSION_NAMESPACE")]
    pub session_namespace: Option<String>,

    /// Kubernetes runtime: the data-plane image running OpenCode (`opencode` on PATH, runs as
    /// uid 1000). Required with CAKE_RUNTIME=kubernetes.
    #[arg(long, env = "CAKE_DATA_PLANE_IMAGE")]
    pub data_plane_image: Option<String>,

    /// Kubernetes runtime: the init image that prepares each session's workspace and git
    /// config (its default entrypoint runs). Required with CAKE_RUNTIME=kubernetes.
    #[arg(long, env = "CAKE_DATA_PLANE_INIT_IMAGE")]
    pub data_plane_init_image: Option<String>,

    /// Kubernetes runtime: imagePullPolicy of both images (Always, IfNotPresent, Never).
    #[arg(long, env = "CAKE_DATA_PLANE_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub data_plane_image_pull_policy: String,

    /// Kubernetes runtime: service account of the session pods (its token is never mounted).
    /// Default: the namespace's default service account.
    #[arg(long, env = "CAKE_DATA_PLANE_SERVICE_ACCOUNT")]
    pub data_plane_service_account: Option<String>,

    /// Kubernetes runtime: resources of the session containers as JSON,
    /// {"requests":{"cpu":"250m","memory":"512Mi"},"limits":{"cpu":"2","memory":"2Gi"}} by
    /// default (a value replaces the default as a whole).
    #[arg(long, env = "CAKE_DATA_PLANE_RESOURCES")]
    pub data_plane_resources: Option<String>,

    /// Kubernetes runtime: nodeSelector of the session pods as a JSON object, e.g.
    /// {"pool":"agents"}.
    #[arg(long, env = "CAKE_DATA_PLANE_NODE_SELECTOR")]
    pub data_plane_node_selector: Option<String>,

    /// Kubernetes runtime: tolerations of the session pods as a JSON array of Kubernetes
    /// Toleration objects.
    #[arg(long, env = "CAKE_DATA_PLANE_TOLERATIONS")]
    pub data_plane_tolerations: Option<String>,

    /// Kubernetes runtime: comma-separated image pull secrets (in the session namespace).
    #[arg(long, env = "CAKE_DATA_PLANE_IMAGE_PULL_SECRETS", value_delimiter = ',', default_value = "")]
    pub data_plane_image_pull_secrets: Vec<String>,

    /// Kubernetes runtime: seconds a session pod may take from creation (image pull included)
    /// until OpenCode answers, before the session is marked failed.
    #[arg(long, env = "CAKE_DATA_PLANE_START_TIMEOUT", default_value_t = 300)]
    pub data_plane_start_timeout: u64,

    /// Kubernetes runtime: seconds a session pod may be held up by what usually heals — no
    /// node fits yet (Unschedulable, while a cluster autoscaler adds one), an image pull that
    /// failed (ErrImagePull, ImagePullBackOff: a registry answering 429) — shown as progress
    /// with the reason, before the session fails with it. At most the start timeout.
    #[arg(long, env = "CAKE_DATA_PLANE_PENDING_GRACE", default_value_t = 120)]
    pub data_plane_pending_grace: u64,

    /// Kubernetes runtime: sizeLimit of each session pod's emptyDir volumes as JSON,
    /// {"workspace":"10Gi","home":"2Gi","tmp":"1Gi"} by default (a value replaces the default
    /// as a whole; a volume left out, or "", has no limit). A session that fills one is
    /// evicted, and fails saying so.
    #[arg(long, env = "CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS")]
    pub data_plane_volume_size_limits: Option<String>,

    /// Kubernetes runtime: this installation's name (the Helm release), written as
    /// app.kubernetes.io/instance on every session pod and Secret and used to select them,
    /// so two installations sharing a namespace leave each other's pods alone.
    #[arg(long, env = "CAKE_INSTANCE", default_value = "cake-agents")]
    pub instance: String,

    /// Kubernetes runtime: seconds between two reconciliations (pods of deleted sessions are
    /// removed, sessions whose pods vanished fail). Only the replica holding the Lease
    /// <instance>-reconciler reconciles.
    #[arg(long, env = "CAKE_RECONCILE_INTERVAL", default_value_t = 60)]
    pub reconcile_interval: u64,

    /// Kubernetes runtime: talk to this API server URL without credentials (e.g.
    /// http://127.0.0.1:8001 behind `kubectl proxy`) instead of the in-cluster service
    /// account or KUBECONFIG.
    #[arg(long, env = "CAKE_KUBE_API_URL")]
    pub kube_api_url: Option<String>,

    /// Secret for cookie signing and for encrypting secrets at rest. Required in production;
    /// when unset, one is generated once into $CAKE_DATA_DIR/secret (development only).
    #[arg(long, env = "BETTER_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<SecretString>,

    /// Comma-separated emails that are admins, whatever the order they sign up in.
    #[arg(long, env = "CAKE_ADMIN_EMAILS", value_delimiter = ',', default_value = "")]
    pub admin_emails: Vec<String>,

    /// Email + password sign-up and sign-in.
    #[arg(long, env = "CAKE_EMAIL_AND_PASSWORD_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub email_and_password_enabled: bool,

    /// Email domains reserved for the platform's own service users: nobody signs up or signs in
    /// with them, whichever method (comma list; subdomains included).
    #[arg(long, env = "CAKE_INTERNAL_EMAIL_DOMAINS", value_delimiter = ',', default_value = "cake.internal")]
    pub internal_email_domains: Vec<String>,

    /// Seconds a browser session lives without being used (sliding; Better Auth's 7 days).
    #[arg(long, env = "CAKE_SESSION_MAX_AGE", default_value_t = 604_800)]
    pub session_max_age: u64,

    /// Seconds after which a used session's expiry is moved forward (and its cookie re-sent).
    #[arg(long, env = "CAKE_SESSION_UPDATE_AGE", default_value_t = 86_400)]
    pub session_update_age: u64,

    /// Failed email + password sign-ins allowed per account per 15 minutes (0: no limit).
    #[arg(long, env = "CAKE_SIGN_IN_LIMIT_PER_ACCOUNT", default_value_t = 10)]
    pub sign_in_limit_per_account: u32,

    /// Sign-in and sign-up attempts allowed per client IP address per minute (0: no limit).
    #[arg(long, env = "CAKE_SIGN_IN_LIMIT_PER_IP", default_value_t = 30)]
    pub sign_in_limit_per_ip: u32,

    /// Extra origins (scheme://host[:port], comma list) allowed to make cookie-authenticated
    /// writes, besides CAKE_PUBLIC_URL's origin and the request's own Host (CSRF protection).
    #[arg(long, env = "CAKE_TRUSTED_ORIGINS", value_delimiter = ',')]
    pub trusted_origins: Vec<String>,

    /// CIDR list of reverse proxies (ingress, load balancer) whose X-Forwarded-For names the
    /// client address used by the sign-in rate limits; the TCP peer otherwise. The header-auth
    /// trusted proxies count too.
    #[arg(long, env = "CAKE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub header_auth: HeaderAuthArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub oidc: OidcArgs,

    /// Frames kept per session for `Last-Event-ID` resumption of event streams.
    #[arg(long, env = "CAKE_EVENT_BUFFER", default_value_t = 1024)]
    pub event_buffer: usize,

    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `cake=debug,info`.
    #[arg(long, env = "CAKE_LOG", default_value = "info")]
    pub log: String,

    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, env = "CAKE_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_json: bool,
}

/// Header authentication (seed 002): identity from a trusted upstream proxy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Header authentication (seed 002)")]
pub struct HeaderAuthArgs {
    /// Sign users in from identity headers set by a trusted proxy (oauth2-proxy, NGINX
    /// auth_request, Istio ext-authz) on requests without a session cookie.
    #[arg(id = "header_auth_enabled", long = "header-auth-enabled", env = "CAKE_HEADER_AUTH_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Header that carries the user's email when no JWT provides it.
    #[arg(id = "header_auth_email_header", long = "header-auth-email-header", env = "CAKE_HEADER_AUTH_EMAIL_HEADER")]
    pub email_header: Option<String>,

    /// JWT claim that contains the user's email.
    #[arg(
        id = "header_auth_email_claim",
        long = "header-auth-email-claim",
        env = "CAKE_HEADER_AUTH_EMAIL_CLAIM",
        default_value = "email"
    )]
    pub email_claim: String,

    /// Header that carries a JWT with identity claims (decoded only, unless
    /// CAKE_HEADER_AUTH_JWKS_URL is set).
    #[arg(id = "header_auth_jwt_header", long = "header-auth-jwt-header", env = "CAKE_HEADER_AUTH_JWT_HEADER")]
    pub jwt_header: Option<String>,

    /// Header that carries the user's display name when no JWT provides it.
    #[arg(id = "header_auth_user_header", long = "header-auth-user-header", env = "CAKE_HEADER_AUTH_USER")]
    pub user_header: Option<String>,

    /// JWT claim that contains the user's display name.
    #[arg(
        id = "header_auth_user_claim",
        long = "header-auth-user-claim",
        env = "CAKE_HEADER_AUTH_USER_CLAIM",
        default_value = "name"
    )]
    pub user_claim: String,

    /// Beyond the seed: CIDR list of proxies allowed to send identity headers (the TCP peer's
    /// address, never X-Forwarded-For); from any other peer they are ignored and logged.
    /// Also used to find the client address for sign-in rate limits. Empty: trust every peer.
    #[arg(
        id = "header_auth_trusted_proxies",
        long = "header-auth-trusted-proxies",
        env = "CAKE_HEADER_AUTH_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Beyond the seed: a JWKS URL; when set, the JWT's signature (RS256, ES256, …) and
    /// expiry are verified against it and a bad token is a 401.
    #[arg(id = "header_auth_jwks_url", long = "header-auth-jwks-url", env = "CAKE_HEADER_AUTH_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// With CAKE_HEADER_AUTH_JWKS_URL: the `iss` verified tokens must carry (unset: any issuer
    /// whose keys are in the key set).
    #[arg(id = "header_auth_jwt_issuer", long = "header-auth-jwt-issuer", env = "CAKE_HEADER_AUTH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// With CAKE_HEADER_AUTH_JWKS_URL: an `aud` verified tokens must carry (unset: the audience
    /// is not checked).
    #[arg(id = "header_auth_jwt_audience", long = "header-auth-jwt-audience", env = "CAKE_HEADER_AUTH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// OpenID Connect sign-in (the chart's `oidc.*` values).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "OpenID Connect")]
pub struct OidcArgs {
    /// Offer sign-in with an OpenID Connect provider (authorization code + PKCE).
    #[arg(id = "oidc_enabled", long = "oidc-enabled", env = "CAKE_OIDC_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// The provider's id in routes: /api/auth/oauth2/callback/<id> is the redirect URI to
    /// register (under CAKE_PUBLIC_URL).
    #[arg(id = "oidc_provider_id", long = "oidc-provider-id", env = "CAKE_OIDC_PROVIDER_ID", default_value = "oidc")]
    pub provider_id: String,

    /// The issuer URL (discovery: <issuer>/.well-known/openid-configuration).
    #[arg(id = "oidc_issuer", long = "oidc-issuer", env = "CAKE_OIDC_ISSUER")]
    pub issuer: Option<String>,

    /// The client id registered with the provider.
    #[arg(id = "oidc_client_id", long = "oidc-client-id", env = "CAKE_OIDC_CLIENT_ID")]
    pub client_id: Option<String>,

    /// The client secret; leave unset for a public client (PKCE only).
    #[arg(
        id = "oidc_client_secret",
        long = "oidc-client-secret",
        env = "CAKE_OIDC_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub client_secret: Option<SecretString>,

    /// Scopes to request (space or comma separated; `openid` is always included).
    #[arg(id = "oidc_scopes", long = "oidc-scopes", env = "CAKE_OIDC_SCOPES", default_value = "openid email profile")]
    pub scopes: String,
}

impl Config {
    /// A configuration for tests and embedding: port 0 on loopback, everything else default.
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut c = Wrapper::parse_from(["cake"]).config;
        c.data_dir = data_dir;
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}
