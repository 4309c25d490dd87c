//! `cake-bench`: the control plane's speed and memory, on this machine, against a real
//! PostgreSQL (the product's embedded launcher, in a temporary directory).
//!
//! Measures (issue "Sessions end to end on one machine", Performance):
//! 1. `POST /api/sessions` latency, p50/p99, at 1 and 50 concurrent clients, excluding the
//!    runtime boot (a runtime that starts nothing, so only the API and the database count);
//! 2. `GET /api/sessions?limit=50` throughput and p50/p99 with 100,000 sessions in the database;
//! 3. idle RSS of the real `cake serve` process;
//! 4. time from create to the first OpenCode event reaching an observer, with the real local
//!    runtime, next to OpenCode's own boot time.
//!
//! Run: `cargo build --release -p cake-server && cargo run --release -p cake-bench`
//! (after `script/setup`). Everything talks to 127.0.0.1 only; every loop is bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cake_adapters::postgres::embedded::EmbeddedPostgres;
use cake_core::ports::{Endpoint, RuntimeEvent, RuntimeSpec, SessionRuntime};
use cake_core::session::SessionId;
use cake_server::config::Config;
use cake_server::startup::Application;
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A runtime that starts nothing and never gets ready: creating a session costs only the API.
struct NullRuntime;

#[async_trait]
impl SessionRuntime for NullRuntime {
    async fn provision(&self, spec: RuntimeSpec) -> cake_core::Result<Value> {
        Ok(json!({"null": spec.session_id.0}))
    }
    async fn wait_ready(&self, _: &Value) -> cake_core::Result<Endpoint> {
        futures::future::pending().await
    }
    async fn endpoint(&self, _: &Value) -> cake_core::Result<Option<Endpoint>> {
        Ok(None)
    }
    async fn stop(&self, _: SessionId) -> cake_core::Result<()> {
        Ok(())
    }
    async fn teardown(&self, _: SessionId, _: Option<Value>) -> cake_core::Result<()> {
        Ok(())
    }
    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        futures::stream::pending().boxed()
    }
    async fn health(&self) -> cake_core::Result<()> {
        Ok(())
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn config(dir: &Path, url: &str) -> Config {
    let mut c = Config::for_data_dir(dir.to_path_buf());
    c.database_url = Some(SecretString::from(url.to_owned()));
    c.auth_secret = Some(SecretString::from("bench-secret-0123456789".to_owned()));
    c.log = "warn".into();
    c
}

async fn admin_token(base: &str) -> Result<String, Error> {
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/api/auth/sign-up/email"))
        .json(&json!({"email": "bench@example.com", "password": "bench password", "name": "Bench"}))
        .send()
        .await?;
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("sign-up set no cookie")?
        .to_owned();
    let created: Value = http
        .post(format!("{base}/api/me/tokens"))
        .header("cookie", cookie)
        .header("origin", base)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    Ok(created["token"].as_str().ok_or("no token")?.to_owned())
}

async fn put_provider(http: &reqwest::Client, base: &str, token: &str) -> Result<(), Error> {
    let body = json!({
        "providers": {"fake": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "k"},
                      "models": {"m": {"name": "M"}}}},
        "defaultModel": "fake/m"
    });
    let r = http.put(format!("{base}/api/admin/providers")).bearer_auth(token).json(&body).send().await?;
    if !r.status().is_success() {
        return Err(format!("provider setup failed: {}", r.status()).into());
    }
    Ok(())
}

async fn create_latencies(base: &str, token: &str, clients: usize, per_client: usize) -> Result<Vec<Duration>, Error> {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/api/sessions"))
                    .bearer_auth(&token)
                    .json(&json!({"private": false, "title": "bench"}))
                    .send()
                    .await?;
                let status = r.status();
                let _ = r.bytes().await?;
                if status != 201 {
                    return Err::<_, Error>(format!("create answered {status}").into());
                }
                out.push(t.elapsed());
            }
            Ok(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(all)
}

async fn list_load(base: &str, token: &str, clients: usize, duration: Duration) -> Result<(f64, Vec<Duration>), Error> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            // Bounded by time and by count.
            while start.elapsed() < duration && out.len() < 1_000_000 {
                let t = Instant::now();
                let r = http.get(format!("{base}/api/sessions?limit=50")).bearer_auth(&token).send().await?;
                let status = r.status();
                let body = r.bytes().await?;
                if status != 200 || body.len() < 100 {
                    return Err::<_, Error>(format!("list answered {status}").into());
                }
                out.push(t.elapsed());
            }
            Ok(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    Ok((all.len() as f64 / secs, all))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

async fn idle_rss(url: &str, dir: &Path) -> Result<u64, Error> {
    let exe = std::env::current_exe()?.with_file_name("cake");
    if !exe.exists() {
        return Err(format!("{} is missing: cargo build --release -p cake-server", exe.display()).into());
    }
    let mut child = tokio::process::Command::new(&exe)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", url)
        .env("CAKE_DATA_DIR", dir)
        .env("BETTER_AUTH_SECRET", "bench-secret-0123456789")
        .env("CAKE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no pid")?;
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?));
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("is running") {
                break;
            }
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(pid).ok_or("cannot read RSS")?;
    child.kill().await?;
    Ok(rss)
}

/// OpenCode on its own, started as the local runtime starts it: time from spawn to the first
/// event of a new OpenCode session (`session.created`) on its `/event` stream.
async fn opencode_boot(bin: &Path, dir: &Path) -> Result<Duration, Error> {
    let home = dir.join(format!("boot-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(home.join("work"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = json!({
        "provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "k"},
                     "models": {"m": {"name": "M"}}}},
        "enabled_providers": ["fake"], "model": "fake/m", "autoupdate": false, "share": "disabled"
    });
    let t = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--hostname", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(home.join("work"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("c"))
        .env("XDG_DATA_HOME", home.join("d"))
        .env("XDG_CACHE_HOME", home.join("k"))
        .env("XDG_STATE_HOME", home.join("s"))
        .env("OPENCODE_SERVER_PASSWORD", "x")
        .env("OPENCODE_CONFIG_CONTENT", config.to_string())
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_PROJECT_CONFIG", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?));
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening on") {
                break;
            }
        }
    })
    .await?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let events = http.get(format!("{base}/event")).basic_auth("opencode", Some("x")).send().await?;
    let mut body = events.bytes_stream();
    // The first frame (server.connected) means the subscription is live.
    let _ = tokio::time::timeout(Duration::from_secs(60), body.next()).await?;
    http.post(format!("{base}/session")).basic_auth("opencode", Some("x")).json(&json!({})).send().await?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if buf.contains("session.created") {
                break;
            }
        }
    })
    .await?;
    let elapsed = t.elapsed();
    child.kill().await?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(elapsed)
}

async fn create_to_first_event(base: &str, token: &str) -> Result<Duration, Error> {
    let http = reqwest::Client::new();
    let t = Instant::now();
    let s: Value = http
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token)
        .json(&json!({"private": true}))
        .send()
        .await?
        .json()
        .await?;
    let id = s["id"].as_str().ok_or("no id")?.to_owned();
    let resp = http.get(format!("{base}/api/sessions/{id}/events")).bearer_auth(token).send().await?;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let found = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if buf.contains("event: opencode") {
                return true;
            }
        }
        false
    })
    .await?;
    let elapsed = t.elapsed();
    if !found {
        return Err("the event stream ended before an OpenCode event".into());
    }
    http.delete(format!("{base}/api/sessions/{id}")).bearer_auth(token).send().await?;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let root = tempfile_dir()?;
    println!("starting PostgreSQL in {}", root.display());
    let pg = EmbeddedPostgres::start(&root.join("pg")).await?;
    let result = run(&pg, &root).await;
    pg.stop().await?;
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn tempfile_dir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("cake-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn run(pg: &EmbeddedPostgres, root: &Path) -> Result<(), Error> {
    pg.ensure_database("bench").await?;
    let url = pg.url("bench");
    let app = Application::build_with_runtime(config(&root.join("api"), &url), Some(Arc::new(NullRuntime))).await?;
    let base = format!("http://{}", app.addr());
    let token = admin_token(&base).await?;
    let http = reqwest::Client::new();
    put_provider(&http, &base, &token).await?;

    // Warm up connections and caches.
    create_latencies(&base, &token, 4, 25).await?;
    let one = create_latencies(&base, &token, 1, 300).await?;
    let fifty = create_latencies(&base, &token, 50, 20).await?;
    println!("\n| measurement | p50 | p99 | n |\n| --- | --- | --- | --- |");
    println!("| create session, 1 client | {:.2} ms | {:.2} ms | {} |", pct(&one, 0.5), pct(&one, 0.99), one.len());
    println!(
        "| create session, 50 clients | {:.2} ms | {:.2} ms | {} |",
        pct(&fifty, 0.5),
        pct(&fifty, 0.99),
        fifty.len()
    );

    // 100,000 sessions of 100 users, half private, spread over a month.
    let pool = app.pool();
    sqlx::query(
        "INSERT INTO users (id, email, name, role) SELECT gen_random_uuid(), 'u' || g || '@example.com', 'User ' || g, 'member' FROM generate_series(1, 100) g",
    )
    .execute(pool)
    .await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(pool).await?;
    sqlx::query(
        "INSERT INTO sessions (id, owner_id, title, private, status, created_at, updated_at)
         SELECT gen_random_uuid(), (SELECT id FROM users ORDER BY id OFFSET (g % 100) LIMIT 1), 'session ' || g, g % 2 = 0,
                'failed', now() - (g || ' seconds')::interval, now()
         FROM generate_series(1, $1::int) g",
    )
    .bind(100_000 - existing as i32)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions").fetch_one(pool).await?;
    list_load(&base, &token, 8, Duration::from_secs(2)).await?;
    for clients in [1, 16, 50] {
        let (rps, lat) = list_load(&base, &token, clients, Duration::from_secs(10)).await?;
        println!(
            "| list sessions (limit 50, {total} rows), {clients} clients | {:.2} ms | {:.2} ms | {} → **{rps:.0} req/s** |",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.len()
        );
    }
    app.shutdown().await;

    pg.ensure_database("bench_rss").await?;
    let rss = idle_rss(&pg.url("bench_rss"), &root.join("rss")).await?;
    println!("| idle RSS of `cake serve` | {:.1} MiB | | |", rss as f64 / 1024.0);

    let bin = cake_adapters::local::default_opencode_bin(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    if !bin.exists() {
        println!("(OpenCode is not installed: run script/setup for the create-to-first-event figure)");
        return Ok(());
    }
    let mut boots = Vec::new();
    for _ in 0..3 {
        boots.push(opencode_boot(&bin, root).await?);
    }
    boots.sort();
    pg.ensure_database("bench_e2e").await?;
    let mut cfg = config(&root.join("e2e"), &pg.url("bench_e2e"));
    cfg.opencode_bin = Some(bin);
    let app = Application::build(cfg).await?;
    let base = format!("http://{}", app.addr());
    let token = admin_token(&base).await?;
    put_provider(&http, &base, &token).await?;
    let mut firsts = Vec::new();
    for _ in 0..3 {
        firsts.push(create_to_first_event(&base, &token).await?);
    }
    firsts.sort();
    app.shutdown().await;
    println!(
        "| OpenCode alone: spawn → first event of a new session | {:.0} ms | max {:.0} ms | 3 |",
        pct(&boots, 0.5),
        pct(&boots, 1.0)
    );
    println!(
        "| create → first OpenCode event at an observer | {:.0} ms | max {:.0} ms | 3 |",
        pct(&firsts, 0.5),
        pct(&firsts, 1.0)
    );
    Ok(())
}
