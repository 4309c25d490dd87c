//! [`LocalRuntime`]: the embedded default runtime. Each session runs `opencode serve` as a
//! child process on one machine:
//!
//! - its own directory `<root>/<session id>/` holding `work/` (the project, the process's
//!   cwd) and `home/` (`HOME` and every `XDG_*` dir, so OpenCode's database and history stay
//!   with the session and survive a control-plane restart);
//! - `127.0.0.1` on a free port, a random `OPENCODE_SERVER_PASSWORD`, the config in
//!   `OPENCODE_CONFIG_CONTENT` with provider keys as env vars (never on disk), and the
//!   hardening env of the OpenCode notes §2–3; nothing else of the control plane's
//!   environment is inherited; `GIT_TERMINAL_PROMPT=0`;
//! - when the owner granted the session credentials: `CAKE_BROKER_TOKEN`, `CAKE_BROKER_URL` and
//!   git's `credential.helper` set (through `GIT_CONFIG_*` env, nothing on disk) to
//!   `cake git-credential`, so git in the session gets its tokens from the control plane;
//! - ready when OpenCode prints its "listening" line;
//! - its own process group, ended as a whole (SIGTERM, then SIGKILL after a grace period), and
//!   killed by the kernel if the control plane dies (`PR_SET_PDEATHSIG`). A process that exits
//!   on its own is reported as a [`RuntimeEvent::Failed`] at once. Process ids are recorded in
//!   `opencode.pid` so a control plane that was killed can still end leftovers when it starts
//!   again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cake_core::ports::{Endpoint, RuntimeEvent, RuntimeSpec, SessionRuntime};
use cake_core::session::SessionId;
use cake_core::{CoreError, Result};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, watch};

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalRuntimeConfig {
    /// Where session directories live (`$CAKE_DATA_DIR/sessions`).
    pub root: PathBuf,
    /// The `opencode` binary.
    pub opencode_bin: PathBuf,
    /// How long OpenCode may take to print its "listening" line.
    pub ready_timeout: Duration,
    /// How long a process gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The control plane's URL as sessions reach it (`CAKE_BROKER_URL` for
    /// `cake git-credential` in sessions granted credentials).
    pub broker_url: Option<String>,
    /// git's `credential.helper` value in sessions granted credentials, e.g.
    /// `/usr/local/bin/cake git-credential` or `!'/opt/my cake/cake' git-credential` (git runs
    /// an absolute path or a `!` command through the shell, with `get`, `store` or `erase`
    /// appended).
    pub git_credential_helper: Option<String>,
}

impl LocalRuntimeConfig {
    /// Defaults for a data dir and binary.
    pub fn new(root: PathBuf, opencode_bin: PathBuf) -> Self {
        Self {
            root,
            opencode_bin,
            ready_timeout: Duration::from_secs(90),
            stop_grace: Duration::from_secs(3),
            broker_url: None,
            git_credential_helper: None,
        }
    }
}

/// What is persisted about a local runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handle {
    kind: String,
    session_id: uuid::Uuid,
    pid: u32,
    port: u16,
}

#[derive(Clone, Debug)]
enum Readiness {
    Starting,
    Ready,
    Failed(String),
}

struct Proc {
    pid: u32,
    port: u16,
    password: SecretString,
    ready: watch::Receiver<Readiness>,
    /// Set before a deliberate stop so the exit is not reported as a failure.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    exited: watch::Receiver<bool>,
}

/// Runs one `opencode serve` child process per session.
pub struct LocalRuntime {
    config: LocalRuntimeConfig,
    procs: Arc<Mutex<HashMap<SessionId, Proc>>>,
    events: broadcast::Sender<RuntimeEvent>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends `signal` to a whole process group.
#[allow(unsafe_code)]
fn kill_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether a process of group `pgid` still runs inside `dir` (its cwd). OpenCode and the
/// commands its tools start share its process group and work under the session directory;
/// checking the cwd keeps a reused process-group id from naming someone else's processes.
fn group_lives_in(pgid: u32, dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { return false };
        let pgrp = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|st| {
            let mut fields = st.rsplit_once(')')?.1.split_whitespace();
            fields.nth(2)?.parse::<u32>().ok()
        });
        pgrp == Some(pgid)
            && std::fs::read_link(format!("/proc/{pid}/cwd")).map(|cwd| cwd.starts_with(dir)).unwrap_or(false)
    })
}

impl LocalRuntime {
    /// Creates the runtime and ends OpenCode processes left behind by a control plane that
    /// did not stop cleanly (their directories stay, so the sessions can be brought back).
    pub fn new(mut config: LocalRuntimeConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.root)?;
        // Each process runs in its session's work dir: a relative binary path must not be
        // resolved from there. (A bare name such as `opencode` is looked up on PATH.)
        if config.opencode_bin.is_relative() && config.opencode_bin.components().count() > 1 {
            config.opencode_bin = std::env::current_dir()?.join(&config.opencode_bin);
        }
        if let Ok(entries) = std::fs::read_dir(&config.root) {
            for e in entries.flatten() {
                let pid_file = e.path().join("opencode.pid");
                if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
                    if group_lives_in(pid, &e.path()) {
                        tracing::warn!(pid, "ending processes left behind by a previous run");
                        kill_group(pid, libc::SIGKILL);
                    }
                    let _ = std::fs::remove_file(pid_file);
                }
            }
        }
        Ok(Self { config, procs: Arc::new(Mutex::new(HashMap::new())), events: broadcast::channel(256).0 })
    }

    /// The directory of one session.
    pub fn session_dir(&self, id: SessionId) -> PathBuf {
        self.config.root.join(id.0.to_string())
    }

    /// Stops every OpenCode process (control-plane shutdown), keeping their directories so the
    /// sessions can be brought back on the next start.
    pub async fn shutdown(&self) {
        let ids: Vec<SessionId> = lock(&self.procs).keys().copied().collect();
        futures::future::join_all(ids.into_iter().map(|id| self.stop_process(id))).await;
    }

    /// How many OpenCode processes run now.
    pub fn running(&self) -> usize {
        lock(&self.procs).len()
    }

    async fn stop_process(&self, id: SessionId) {
        let Some(proc) = lock(&self.procs).remove(&id) else { return };
        proc.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        kill_group(proc.pid, libc::SIGTERM);
        let mut exited = proc.exited.clone();
        let graceful = tokio::time::timeout(self.config.stop_grace, exited.wait_for(|e| *e)).await.is_ok();
        if !graceful {
            kill_group(proc.pid, libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|e| *e)).await;
        }
        // Children OpenCode started (tool commands) share the group; make sure none is left.
        kill_group(proc.pid, libc::SIGKILL);
        let _ = std::fs::remove_file(self.session_dir(id).join("opencode.pid"));
    }

    async fn spawn(&self, spec: &RuntimeSpec) -> Result<Handle> {
        let dir = self.session_dir(spec.session_id);
        let work = dir.join("work");
        let home = dir.join("home");
        for d in [
            &work,
            &home,
            &home.join(".config"),
            &home.join(".local/share"),
            &home.join(".cache"),
            &home.join(".local/state"),
            &dir.join("tmp"),
        ] {
            tokio::fs::create_dir_all(d).await.map_err(CoreError::internal)?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(CoreError::internal)?
            .port();
        let mut cmd = tokio::process::Command::new(&self.config.opencode_bin);
        cmd.args(["serve", "--hostname", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(&work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
            .env("LANG", "C.UTF-8")
            .env("HOME", &home)
            .env("TMPDIR", dir.join("tmp"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("OPENCODE_SERVER_PASSWORD", spec.password.expose_secret())
            .env("OPENCODE_CONFIG_CONTENT", &spec.opencode_config)
            .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
            .env("OPENCODE_DISABLE_PROJECT_CONFIG", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        for (name, value) in &spec.env {
            cmd.env(name, value.expose_secret());
        }
        // An agent cannot answer git's password prompt: fail instead of hanging.
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        if let Some(token) = &spec.broker_token {
            cmd.env("CAKE_BROKER_TOKEN", token.expose_secret());
            if let Some(url) = &self.config.broker_url {
                cmd.env("CAKE_BROKER_URL", url);
            }
            if let Some(helper) = &self.config.git_credential_helper {
                // Git config through the environment (git >= 2.31): the empty value first
                // drops helpers the machine's own config names, so only the broker answers.
                cmd.env("GIT_CONFIG_COUNT", "2")
                    .env("GIT_CONFIG_KEY_0", "credential.helper")
                    .env("GIT_CONFIG_VALUE_0", "")
                    .env("GIT_CONFIG_KEY_1", "credential.helper")
                    .env("GIT_CONFIG_VALUE_1", helper);
            }
        }
        set_parent_death_signal(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            CoreError::Unavailable(format!("cannot start OpenCode ({}): {e}", self.config.opencode_bin.display()))
        })?;
        let pid = child.id().ok_or_else(|| CoreError::internal("OpenCode exited at once"))?;
        let _ = tokio::fs::write(dir.join("opencode.pid"), pid.to_string()).await;

        let (ready_tx, ready_rx) = watch::channel(Readiness::Starting);
        let (exit_tx, exit_rx) = watch::channel(false);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log_path = dir.join("opencode.log");
        let log = Arc::new(tokio::sync::Mutex::new(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .await
                .map_err(CoreError::internal)?,
        ));
        if let Some(stdout) = child.stdout.take() {
            let log = log.clone();
            let ready_tx = ready_tx.clone();
            let needle = format!("listening on http://127.0.0.1:{port}");
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(&needle) {
                        let _ = ready_tx.send(Readiness::Ready);
                    }
                    let _ = log.lock().await.write_all(format!("{line}\n").as_bytes()).await;
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = log.lock().await.write_all(format!("{line}\n").as_bytes()).await;
                }
            });
        }
        {
            let stopping = stopping.clone();
            let events = self.events.clone();
            let procs = self.procs.clone();
            let session_id = spec.session_id;
            tokio::spawn(async move {
                let status = child.wait().await;
                let _ = exit_tx.send(true);
                let reason = match status {
                    Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                        (Some(code), _) => format!("OpenCode exited unexpectedly with status {code}"),
                        (None, Some(sig)) => format!("OpenCode was killed by signal {sig}"),
                        _ => "OpenCode exited unexpectedly".to_owned(),
                    },
                    Err(e) => format!("lost track of the OpenCode process: {e}"),
                };
                let _ = ready_tx.send(Readiness::Failed(reason.clone()));
                if !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    tracing::warn!(session.id = %session_id, %reason, "data plane process died");
                    {
                        let mut map = lock(&procs);
                        if map.get(&session_id).is_some_and(|p| p.pid == pid) {
                            map.remove(&session_id);
                        }
                    }
                    kill_group(pid, libc::SIGKILL);
                    let _ = events.send(RuntimeEvent::Failed { session_id, reason });
                }
            });
        }
        lock(&self.procs).insert(
            spec.session_id,
            Proc { pid, port, password: spec.password.clone(), ready: ready_rx, stopping, exited: exit_rx },
        );
        Ok(Handle { kind: "local".into(), session_id: spec.session_id.0, pid, port })
    }
}

/// Makes the kernel kill the child when the control plane dies, so no OpenCode outlives it.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn parse_handle(v: &serde_json::Value) -> Result<Handle> {
    serde_json::from_value(v.clone()).map_err(|e| CoreError::internal(format!("not a local runtime handle: {e}")))
}

#[async_trait]
impl SessionRuntime for LocalRuntime {
    async fn provision(&self, spec: RuntimeSpec) -> Result<serde_json::Value> {
        let existing = lock(&self.procs).get(&spec.session_id).map(|p| Handle {
            kind: "local".into(),
            session_id: spec.session_id.0,
            pid: p.pid,
            port: p.port,
        });
        let handle = match existing {
            Some(h) => h,
            None => self.spawn(&spec).await?,
        };
        serde_json::to_value(handle).map_err(CoreError::internal)
    }

    async fn wait_ready(&self, handle: &serde_json::Value) -> Result<Endpoint> {
        let h = parse_handle(handle)?;
        let id = SessionId(h.session_id);
        let mut ready = lock(&self.procs)
            .get(&id)
            .map(|p| p.ready.clone())
            .ok_or_else(|| CoreError::Unavailable("the OpenCode process is not running".into()))?;
        let waited =
            tokio::time::timeout(self.config.ready_timeout, ready.wait_for(|r| !matches!(r, Readiness::Starting)))
                .await;
        let state = match waited.map(|r| r.map(|g| g.clone())) {
            Err(_) => {
                self.stop_process(id).await;
                return Err(CoreError::Unavailable(format!(
                    "OpenCode did not start within {} s (log: {})",
                    self.config.ready_timeout.as_secs(),
                    self.session_dir(id).join("opencode.log").display()
                )));
            }
            Ok(Err(_)) => Readiness::Failed("the OpenCode process went away".into()),
            Ok(Ok(r)) => r,
        };
        match state {
            Readiness::Ready => self
                .endpoint(handle)
                .await?
                .ok_or_else(|| CoreError::Unavailable("the OpenCode process went away".into())),
            Readiness::Failed(reason) => Err(CoreError::Unavailable(reason)),
            Readiness::Starting => Err(CoreError::Unavailable("OpenCode is still starting".into())),
        }
    }

    async fn endpoint(&self, handle: &serde_json::Value) -> Result<Option<Endpoint>> {
        let h = parse_handle(handle)?;
        Ok(lock(&self.procs).get(&SessionId(h.session_id)).map(|p| Endpoint {
            base_url: format!("http://127.0.0.1:{}", p.port),
            username: "opencode".into(),
            password: p.password.clone(),
        }))
    }

    async fn stop(&self, session_id: SessionId) -> Result<()> {
        self.stop_process(session_id).await;
        Ok(())
    }

    async fn teardown(&self, session_id: SessionId, handle: Option<serde_json::Value>) -> Result<()> {
        self.stop_process(session_id).await;
        // Processes of a previous control-plane run (or their tools) that are still around.
        let dir = self.session_dir(session_id);
        if let Some(h) = handle.as_ref().and_then(|h| parse_handle(h).ok())
            && group_lives_in(h.pid, &dir)
        {
            kill_group(h.pid, libc::SIGKILL);
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoreError::internal(format!("cannot remove {}: {e}", dir.display()))),
        }
    }

    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe())
            .filter_map(|r| futures::future::ready(r.ok()))
            .boxed()
    }

    async fn health(&self) -> Result<()> {
        if tokio::fs::metadata(&self.config.opencode_bin).await.is_ok() {
            Ok(())
        } else {
            Err(CoreError::Unavailable(format!(
                "the OpenCode binary {} is missing; run script/setup or set CAKE_OPENCODE_BIN",
                self.config.opencode_bin.display()
            )))
        }
    }
}

/// Finds the OpenCode binary `script/setup` installs under `.tools/` of a checkout (the
/// platform package's own binary, the baseline build when the CPU lacks AVX2).
pub fn default_opencode_bin(project_root: &Path) -> PathBuf {
    let modules = project_root.join(".tools/node_modules");
    let avx2 = std::fs::read_to_string("/proc/cpuinfo").map(|c| c.contains(" avx2")).unwrap_or(true);
    let preferred = if avx2 { "opencode-linux-x64" } else { "opencode-linux-x64-baseline" };
    for pkg in [preferred, "opencode-linux-x64", "opencode-linux-x64-baseline", "opencode-linux-arm64"] {
        let bin = modules.join(pkg).join("bin/opencode");
        if bin.exists() {
            return bin;
        }
    }
    PathBuf::from("opencode")
}
