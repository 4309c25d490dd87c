//! A real OpenID provider for the tests: panva's certified `oidc-provider` (installed by
//! `script/setup` into `.tools/oidc`), run by `tests/oidc/provider.mjs` on 127.0.0.1.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running provider; killed when dropped.
pub struct TestIdp {
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    _child: tokio::process::Child,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl TestIdp {
    /// Starts the provider with these client registrations (OIDC dynamic-registration JSON).
    pub async fn start(clients: Value) -> Self {
        let module = root().join(".tools/oidc/node_modules/oidc-provider/lib/index.js");
        assert!(module.exists(), "oidc-provider is not installed: run script/setup ({})", module.display());
        let mut child = tokio::process::Command::new("node")
            .arg(root().join("tests/oidc/provider.mjs"))
            .env("OIDC_PROVIDER_MODULE", module)
            .env("OIDC_CLIENTS", clients.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(p) = line.strip_prefix("listening ") {
                    return p.trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("the OpenID provider starts");
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { issuer: format!("http://127.0.0.1:{port}"), _child: child }
    }
}

/// A free port on 127.0.0.1 (for a server whose URL must be known before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
