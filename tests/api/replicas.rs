//! Several control-plane replicas on one database (the chart with `replicas > 1`): what one
//! replica changes reaches the observers connected to another (PostgreSQL `LISTEN`/`NOTIFY`),
//! once, and a session made private on one replica ends other users' streams on every replica.
//! Runs with the Kubernetes runtime on a fake API server; no pod ever starts, so the session
//! stays on its way to ready — its status frames come from the database alone.

use std::time::Duration;

use cake_server::startup::Application;
use cake_tests::app::{PROVIDER_KEY, sign_in, spawn_app_with, test_config};
use cake_tests::fake_kube::{FakeKube, use_fake_kube};
use cake_tests::sse::SseFrame;
use serde_json::json;

const NS: &str = "replicas";
const WAIT: Duration = Duration::from_secs(20);

fn is_status(f: &SseFrame) -> bool {
    f.event.as_deref() == Some("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_on_one_replica_reach_observers_on_another() {
    let kube = FakeKube::start().await;
    let mut app = spawn_app_with(|c| use_fake_kube(c, &kube, NS, 600)).await;
    let alice = app.sign_up("alice").await;
    let bob = app.sign_up("bob").await;
    let (status, _) = alice.send("PUT", "/api/admin/providers", Some(app.provider_body(PROVIDER_KEY, None))).await;
    assert_eq!(status, 200);

    let dir2 = tempfile::Builder::new().prefix("cake-test").tempdir_in("/tmp").unwrap();
    let mut config2 = test_config(dir2.path().into(), Some(app.database_url.clone()));
    use_fake_kube(&mut config2, &kube, NS, 600);
    let app2 = Application::build(config2).await.expect("the second replica starts");
    let base2 = format!("http://127.0.0.1:{}", app2.port());
    let bob2 = sign_in(&base2, &bob.email).await;

    // A public session of Alice's, made on replica 1; Bob watches it on replica 2 and Alice
    // on replica 1.
    let id = alice.create_session(false, None).await["id"].as_str().unwrap().to_owned();
    let mut on_2 = bob2.events(&id, None).await;
    on_2.until(WAIT, is_status).await.expect("the connect-time status frame");
    let mut on_1 = alice.events(&id, None).await;
    on_1.until(WAIT, is_status).await.expect("the connect-time status frame");

    // Alice renames it on replica 1: Bob's stream on replica 2 shows it.
    let (status, renamed) =
        alice.send("PATCH", &format!("/api/sessions/{id}"), Some(json!({"title": "renamed on 1"}))).await;
    assert_eq!(status, 200, "{renamed}");
    let (frame, _) = on_2
        .until(WAIT, |f| is_status(f) && f.data["title"] == "renamed on 1")
        .await
        .expect("the title change reaches replica 2's observers");
    assert_eq!(frame.data["id"], id.as_str());
    // Replica 1's observers get it exactly once (its own frame and the feed's are one).
    let (first, _) = on_1.until(WAIT, |f| is_status(f) && f.data["title"] == "renamed on 1").await.expect("the rename");
    let again = on_1.until(Duration::from_secs(2), |f| is_status(f) && f.data == first.data).await;
    assert!(again.is_none(), "no duplicate status frame on replica 1: {again:?}");

    // Made private on replica 1: Bob's stream on replica 2 ends, and he no longer sees it.
    let (status, _) = alice.send("PATCH", &format!("/api/sessions/{id}"), Some(json!({"private": true}))).await;
    assert_eq!(status, 200);
    assert!(on_2.closes_within(WAIT).await, "another user's stream ends on every replica");
    assert_eq!(bob2.get(&format!("/api/sessions/{id}")).await.0, 404);

    // Deleted on replica 2 by its owner: Alice's stream on replica 1 ends.
    let alice2 = sign_in(&base2, &alice.email).await;
    let mut on_1b = alice.events(&id, None).await;
    on_1b.until(WAIT, is_status).await.expect("connect frame");
    assert_eq!(alice2.send("DELETE", &format!("/api/sessions/{id}"), None).await.0, 204);
    assert!(on_1b.closes_within(WAIT).await, "a deletion on replica 2 ends replica 1's streams");
    assert!(on_1.closes_within(WAIT).await);

    app2.shutdown().await;
    app.stop().await;
}
