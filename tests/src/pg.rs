//! One real PostgreSQL cluster per test binary (the product's own embedded launcher, in a
//! temporary directory), and a fresh database per test. The cluster stops when the test
//! process exits.

use cake_adapters::postgres::embedded::EmbeddedPostgres;
use tokio::sync::OnceCell;

static CLUSTER: OnceCell<(EmbeddedPostgres, tempfile::TempDir)> = OnceCell::const_new();

extern "C" fn stop_cluster() {
    if let Some((pg, _)) = CLUSTER.get() {
        pg.stop_blocking_immediate();
    }
}

/// The shared cluster, started on first use.
pub async fn cluster() -> &'static EmbeddedPostgres {
    let (pg, _) = CLUSTER
        .get_or_init(|| async {
            let dir = tempfile::Builder::new().prefix("cake-test-pg").tempdir_in("/tmp").unwrap();
            let pg = EmbeddedPostgres::start(dir.path()).await.expect("start PostgreSQL for tests");
            // SAFETY: registers a plain extern "C" function to run at process exit.
            unsafe {
                libc::atexit(stop_cluster);
            }
            (pg, dir)
        })
        .await;
    pg
}

/// A fresh, empty database; returns its URL.
pub async fn fresh_database() -> String {
    let pg = cluster().await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    pg.ensure_database(&name).await.unwrap();
    pg.url(&name)
}
