//! With no `DATABASE_URL` but `PGHOST` set, `cake serve` connects with the standard libpq
//! variables (what the Helm chart's `externalDatabase.existingSecretEnv` provides) instead of
//! starting its embedded cluster.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cake_adapters::postgres::embedded::EmbeddedPostgres;

#[tokio::test]
async fn serve_connects_with_the_pg_environment_variables() {
    let root = std::env::temp_dir().join(format!("cake-pgenv-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).unwrap();
    let pg = EmbeddedPostgres::start(&root.join("pg")).await.expect("a PostgreSQL to connect to");
    pg.ensure_database("from_env").await.unwrap();
    // postgres://cake:<password>@127.0.0.1:<port>/<db>
    let url = pg.url("from_env");
    let password = url.split_once("cake:").unwrap().1.split_once('@').unwrap().0.to_owned();
    let data_dir = root.join("data");

    let mut child = Command::new(env!("CARGO_BIN_EXE_cake"))
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port().to_string())
        .env("PGUSER", "cake")
        .env("PGPASSWORD", &password)
        .env("PGDATABASE", "from_env")
        .env("PGSSLMODE", "disable")
        .env("CAKE_LISTEN", "127.0.0.1:0")
        .env("CAKE_DATA_DIR", &data_dir)
        .env("BETTER_AUTH_SECRET", "test-secret-0123456789abcdef")
        .env("CAKE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cake serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("cake serve starts");
        if let Some(rest) = line.strip_prefix("Cake Agents is running at http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let readyz: serde_json::Value = reqwest::get(format!("http://{addr}/readyz")).await.unwrap().json().await.unwrap();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();

    // The cluster has no database named like the user, so connecting at all shows that
    // PGDATABASE (like PGPORT, PGUSER and PGPASSWORD) was honoured.
    assert_eq!(readyz["database"], "ok", "{readyz}");
    assert!(!data_dir.join("postgres").exists(), "no embedded cluster was started");
    pg.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
