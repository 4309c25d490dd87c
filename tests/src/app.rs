//! `spawn_app()`: the real control plane on port 0, a fresh database on a real PostgreSQL, the
//! real OpenCode of `script/setup`, and a fake model; plus typed helpers for the tests.

use std::path::PathBuf;
use std::time::Duration;

use cake_server::config::Config;
use cake_server::startup::Application;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::fake_model::FakeModel;
use crate::sse::SseReader;

/// The API key the tests configure for the fake provider.
pub const PROVIDER_KEY: &str = "sk-test-provider-key-1234";

/// The OpenCode binary `script/setup` installs.
pub fn opencode_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = cake_adapters::local::default_opencode_bin(&root);
    assert!(bin.exists(), "OpenCode is not installed: run script/setup ({})", bin.display());
    bin
}

/// The `cake` binary of this build (`cargo test --workspace` builds it: `cake-server` has
/// integration tests). Sessions granted credentials run its `git-credential` subcommand.
pub fn cake_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary> → target/<profile>/cake
    exe.parent().and_then(|deps| deps.parent()).map(|dir| dir.join("cake")).unwrap()
}

/// A running control plane for one test.
pub struct TestApp {
    /// The application (None once shut down).
    pub app: Option<Application>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The data dir (sessions' work dirs live in `sessions/`).
    pub data_dir: tempfile::TempDir,
    /// The database URL.
    pub database_url: String,
    /// The fake model.
    pub model: FakeModel,
}

/// A signed-in user with their own cookie jar.
#[derive(Clone)]
pub struct TestUser {
    /// HTTP client holding the session cookie.
    pub client: reqwest::Client,
    /// Base URL.
    pub base: String,
    /// The user's id.
    pub id: String,
    /// Email.
    pub email: String,
}

/// An anonymous client.
pub fn anonymous() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// A browser-like client: a cookie jar, and the `Origin` header a browser sends with the
/// writes of a page served from `base` (the server refuses cookie-authenticated writes
/// without it).
pub fn browser(base: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::ORIGIN, base.parse().unwrap());
    reqwest::Client::builder()
        .cookie_store(true)
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Signs `email` in (with the password [`TestApp::sign_up`] gives everyone) on the control
/// plane at `base`, in a browser of its own.
pub async fn sign_in(base: &str, email: &str) -> TestUser {
    let client = browser(base);
    let resp = client
        .post(format!("{base}/api/auth/sign-in/email"))
        .json(&json!({"email": email, "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "sign-in of {email}");
    let body: Value = resp.json().await.unwrap();
    TestUser { client, base: base.into(), id: body["user"]["id"].as_str().unwrap().into(), email: email.into() }
}

/// The configuration the tests use.
pub fn test_config(data_dir: PathBuf, database_url: Option<String>) -> Config {
    let mut c = Config::for_data_dir(data_dir);
    c.database_url = database_url.map(SecretString::from);
    c.opencode_bin = Some(opencode_bin());
    c.auth_secret = Some(SecretString::from("test-secret-0123456789abcdef".to_owned()));
    c.admin_emails = vec![];
    // The in-process server's own executable is the test binary: point git at the real `cake`.
    c.git_credential_helper = Some(cake_server::startup::git_helper_for(&cake_bin().to_string_lossy()));
    c
}

/// Starts everything.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts everything, with a change to the configuration.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let database_url = crate::pg::fresh_database().await;
    let data_dir = tempfile::Builder::new().prefix("cake-test").tempdir_in("/tmp").unwrap();
    let model = FakeModel::start().await;
    let mut config = test_config(data_dir.path().to_path_buf(), Some(database_url.clone()));
    tweak(&mut config);
    let app = Application::build(config).await.expect("the control plane starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    TestApp { app: Some(app), base, data_dir, database_url, model }
}

impl TestApp {
    /// Signs up `name@example.com`.
    pub async fn sign_up(&self, name: &str) -> TestUser {
        let client = browser(&self.base);
        let email = format!("{name}@example.com");
        let resp = client
            .post(format!("{}/api/auth/sign-up/email", self.base))
            .json(&json!({"email": email, "password": "correct horse battery", "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "sign-up of {name}");
        let body: Value = resp.json().await.unwrap();
        TestUser { client, base: self.base.clone(), id: body["user"]["id"].as_str().unwrap().to_owned(), email }
    }

    /// The provider settings the tests use, pointing at the fake model.
    pub fn provider_body(&self, api_key: &str, permission: Option<Value>) -> Value {
        let mut body = json!({
            "providers": {"fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake LiteLLM",
                "options": {"baseURL": self.model.base_url, "apiKey": api_key},
                "models": {"fake-model": {"name": "Fake Model", "limit": {"context": 128000, "output": 4096}}}
            }},
            "defaultModel": "fake/fake-model"
        });
        if let Some(p) = permission {
            body["permission"] = p;
        }
        body
    }

    /// Stops the control plane.
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }

    /// The session directories that exist.
    pub fn session_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir.path().join("sessions"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl TestUser {
    /// `GET` a path, returning status and JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A request with a JSON body (`method` in upper case), returning status and JSON.
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates a session and returns it.
    pub async fn create_session(&self, private: bool, prompt: Option<&str>) -> Value {
        let mut body = json!({"title": "test session", "private": private});
        if let Some(p) = prompt {
            body["initialUserPrompt"] = json!(p);
        }
        let (status, s) = self.send("POST", "/api/sessions", Some(body)).await;
        assert_eq!(status, 201, "{s}");
        s
    }

    /// Polls a session until its status is `want` (or fails the test after `timeout`).
    pub async fn wait_status(&self, id: &str, want: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, s) = self.get(&format!("/api/sessions/{id}")).await;
            assert_eq!(status, 200, "{s}");
            if s["status"] == want {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session {id} did not become {want} within {timeout:?}; it is {s}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Opens the session's event stream.
    pub async fn events(&self, id: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req =
            self.client.get(format!("{}/api/sessions/{id}/events", self.base)).timeout(Duration::from_secs(600));
        if let Some(l) = last_event_id {
            req = req.header("Last-Event-ID", l);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        SseReader::new(resp)
    }
}
