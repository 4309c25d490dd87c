//! The embedded default (DESIGN.md, "Configuration"): with no `DATABASE_URL`, `cake serve`
//! initialises a PostgreSQL cluster from the machine's PostgreSQL binaries in
//! `$CAKE_DATA_DIR/postgres`, starts it on a free loopback port with a generated password
//! (SCRAM), stops it on shutdown and reuses it — data and all — on the next start.
//!
//! `initdb` and `postgres` refuse to run as root, so when the control plane runs as root the
//! cluster is owned by, and run as, the `postgres` user (through `runuser`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;

/// Why the embedded cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "no PostgreSQL server binaries found (looked in $CAKE_POSTGRES_BIN_DIR and /usr/lib/postgresql/*/bin); \
         install them (`apt-get install postgresql`, or run script/setup) or set DATABASE_URL"
    )]
    NoBinaries,
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// Which step.
        what: &'static str,
        /// Its output.
        detail: String,
    },
    /// File system trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running embedded cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    password: SecretString,
    as_postgres_user: bool,
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CAKE_POSTGRES_BIN_DIR") {
        let p = PathBuf::from(dir);
        return p.join("initdb").exists().then_some(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    // The effective uid from /proc, which needs no unsafe libc call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbeddedPostgres {
    /// Initialises (once) and starts the cluster under `root`, and makes sure database `cake`
    /// exists. Reuses a cluster left running by a control plane that did not stop cleanly.
    pub async fn start(root: &Path) -> Result<Self, EmbeddedError> {
        let bin = find_bin_dir().ok_or(EmbeddedError::NoBinaries)?;
        let as_postgres_user = is_root();
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let data = root.join("data");
        let pw_file = root.join("superuser-password");
        if as_postgres_user {
            run("chown", Command::new("chown").arg("-R").arg("postgres:postgres").arg(&root)).await?;
        }
        let mut this =
            Self { root: root.clone(), bin, port: 0, password: SecretString::from(String::new()), as_postgres_user };
        if !data.join("PG_VERSION").exists() {
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private(&pw_file, &password)?;
            if as_postgres_user {
                run("chown", Command::new("chown").arg("postgres:postgres").arg(&pw_file)).await?;
            }
            let _ = std::fs::remove_dir_all(&data);
            let mut cmd = this.pg_command("initdb");
            cmd.arg("-D")
                .arg(&data)
                .args(["-U", "cake", "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"])
                .arg(format!("--pwfile={}", pw_file.display()));
            run("initdb", &mut cmd).await?;
            // Loopback TCP only; no Unix socket (its path length limit would bite deep data dirs).
            let conf =
                "\n# cake-agents embedded cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n";
            let mut f = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?;
            std::io::Write::write_all(&mut f, conf.as_bytes())?;
        }
        this.password = SecretString::from(std::fs::read_to_string(&pw_file)?.trim().to_owned());

        this.port = match this.running_port() {
            Some(port) => port,
            None => {
                let port = free_port()?;
                let mut cmd = this.pg_command("pg_ctl");
                cmd.arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(root.join("postgres.log"))
                    .args(["-w", "-t", "60", "-o"])
                    .arg(format!("-p {port}"))
                    .arg("start");
                run("pg_ctl start", &mut cmd).await.map_err(|e| match e {
                    EmbeddedError::Command { what, detail } => EmbeddedError::Command {
                        what,
                        detail: format!("{detail} (see {})", root.join("postgres.log").display()),
                    },
                    other => other,
                })?;
                port
            }
        };
        this.ensure_database("cake").await?;
        Ok(this)
    }

    /// The port of a postmaster already serving this data dir, if its pid is alive.
    fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.root.join("data/postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: u32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(port)
    }

    fn pg_command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.stdin(Stdio::null()).kill_on_drop(false);
        cmd
    }

    /// Creates database `name` if it does not exist.
    pub async fn ensure_database(&self, name: &str) -> Result<(), EmbeddedError> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await.map_err(|e| {
            EmbeddedError::Command { what: "connecting to the embedded cluster", detail: e.to_string() }
        })?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| EmbeddedError::Command { what: "querying pg_database", detail: e.to_string() })?;
        if exists.is_none() {
            let quoted = name.replace('"', "\"\"");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
                .execute(&mut conn)
                .await
                .map_err(|e| EmbeddedError::Command { what: "CREATE DATABASE", detail: e.to_string() })?;
        }
        Ok(())
    }

    /// A connection URL for database `db` (contains the password: never log it).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://cake:{}@127.0.0.1:{}/{db}", self.password.expose_secret(), self.port)
    }

    /// The loopback port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the cluster (fast shutdown: sessions end, data is safe).
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D").arg(self.root.join("data")).args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run("pg_ctl stop", &mut cmd).await
    }

    /// Stops the cluster from a synchronous context (immediate shutdown), e.g. at process exit
    /// in tests.
    pub fn stop_blocking_immediate(&self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.root.join("data");
        let mut cmd = if self.as_postgres_user {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        let _ = cmd
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    std::io::Write::write_all(&mut f, content.as_bytes())
}

async fn run(what: &'static str, cmd: &mut Command) -> Result<(), EmbeddedError> {
    let out =
        tokio::time::timeout(Duration::from_secs(120), cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output())
            .await
            .map_err(|_| EmbeddedError::Command { what, detail: "timed out after 120 s".into() })??;
    if out.status.success() {
        Ok(())
    } else {
        Err(EmbeddedError::Command {
            what,
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        })
    }
}
