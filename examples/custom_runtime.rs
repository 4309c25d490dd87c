//! A control plane with a custom [`SessionRuntime`]: a quota decorator around the local
//! runtime that refuses to run more than `CAKE_EXAMPLE_MAX_SESSIONS` OpenCode processes at
//! once. Sessions over the quota turn `failed` with a clear reason instead of overloading the
//! machine.
//!
//! It shows the seam embedding teams use: `Application::build_with_runtime` takes any
//! `Arc<dyn SessionRuntime>`; everything else (API, permissions, PostgreSQL, event relay) is
//! the stock control plane.
//!
//! Run (after `script/setup`): `cargo run -p cake-examples --example custom_runtime`, then use
//! the API on the printed URL. `CAKE_EXAMPLE_SMOKE=1` starts, prints the URL and stops.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use cake_adapters::local::{LocalRuntime, LocalRuntimeConfig, default_opencode_bin};
use cake_core::ports::{Endpoint, RuntimeEvent, RuntimeSpec, SessionRuntime};
use cake_core::session::SessionId;
use cake_core::{CoreError, Result};
use cake_server::config::Config;
use cake_server::startup::Application;
use futures::stream::BoxStream;

/// Limits how many runtimes exist at once.
struct QuotaRuntime {
    inner: LocalRuntime,
    max: usize,
    running: AtomicUsize,
}

#[async_trait]
impl SessionRuntime for QuotaRuntime {
    async fn provision(&self, spec: RuntimeSpec) -> Result<serde_json::Value> {
        let now = self.running.fetch_add(1, Ordering::SeqCst);
        if now >= self.max {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(CoreError::Unavailable(format!(
                "this installation runs at most {} sessions at once; delete one and retry",
                self.max
            )));
        }
        let result = self.inner.provision(spec).await;
        if result.is_err() {
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    async fn wait_ready(&self, handle: &serde_json::Value) -> Result<Endpoint> {
        self.inner.wait_ready(handle).await
    }

    async fn endpoint(&self, handle: &serde_json::Value) -> Result<Option<Endpoint>> {
        self.inner.endpoint(handle).await
    }

    async fn stop(&self, session_id: SessionId) -> Result<()> {
        self.inner.stop(session_id).await?;
        self.running.store(self.inner.running(), Ordering::SeqCst);
        Ok(())
    }

    async fn teardown(&self, session_id: SessionId, handle: Option<serde_json::Value>) -> Result<()> {
        self.inner.teardown(session_id, handle).await?;
        self.running.store(self.inner.running(), Ordering::SeqCst);
        Ok(())
    }

    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        self.inner.events()
    }

    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }

    // A wrapper forwards the provided methods too: their defaults may not be the inner
    // runtime's answers (and `is_data_plane_address` guards header auth).
    fn survives_restart(&self) -> bool {
        self.inner.survives_restart()
    }

    fn is_data_plane_address(&self, ip: std::net::IpAddr) -> bool {
        self.inner.is_data_plane_address(ip)
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::for_data_dir("./.cake-example".into());
    config.listen = "127.0.0.1:8081".parse()?;
    let data_dir = std::fs::canonicalize({
        std::fs::create_dir_all(&config.data_dir)?;
        &config.data_dir
    })?;
    let max = std::env::var("CAKE_EXAMPLE_MAX_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let local = LocalRuntime::new(LocalRuntimeConfig::new(data_dir.join("sessions"), default_opencode_bin(&project)))?;
    let runtime = Arc::new(QuotaRuntime { inner: local, max, running: AtomicUsize::new(0) });
    let app = Application::build_with_runtime(config, Some(runtime)).await?;
    println!("control plane with a {max}-session quota on http://{}/api/docs", app.addr());
    if std::env::var_os("CAKE_EXAMPLE_SMOKE").is_none() {
        tokio::signal::ctrl_c().await?;
    }
    app.shutdown().await;
    Ok(())
}
