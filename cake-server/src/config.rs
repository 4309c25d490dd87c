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

    /// Where data planes run.
    #[arg(long, env = "CAKE_RUNTIME", value_enum, default_value = "local")]
    pub runtime: RuntimeKind,

    /// The OpenCode binary the local runtime starts (default: the copy script/setup installs
    /// under .tools/, else `opencode` on PATH).
    #[arg(long, env = "CAKE_OPENCODE_BIN")]
    pub opencode_bin: Option<PathBuf>,

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

impl Config {
    /// The public URL, defaulting to `http://<listen>`.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_owned()
    }

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
