//! The control plane restarted on the same data dir, with its embedded PostgreSQL: users and
//! sessions survive, a ready session comes back with its OpenCode history, and no OpenCode
//! outlives the control plane.

use std::time::Duration;

use cake_server::startup::Application;
use cake_tests::app::{PROVIDER_KEY, sign_in, test_config};
use cake_tests::fake_model::FakeModel;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_data_dir_keeps_users_and_sessions() {
    let dir = tempfile::Builder::new().prefix("cake-restart").tempdir_in("/tmp").unwrap();
    let model = FakeModel::start().await;
    // No DATABASE_URL: the embedded cluster in <data dir>/postgres.
    let app = Application::build(test_config(dir.path().into(), None)).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let client = cake_tests::app::browser(&base);
    let resp = client
        .post(format!("{base}/api/auth/sign-up/email"))
        .json(&json!({"email": "gina@example.com", "password": "correct horse battery", "name": "Gina"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let gina = sign_in(&base, "gina@example.com").await;
    let providers = json!({
        "providers": {"fake": {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": model.base_url, "apiKey": PROVIDER_KEY},
                      "models": {"fake-model": {"name": "Fake"}}}},
        "defaultModel": "fake/fake-model"
    });
    assert_eq!(gina.send("PUT", "/api/admin/providers", Some(providers)).await.0, 200);
    let s = gina.create_session(true, Some("Say PONG")).await;
    let id = s["id"].as_str().unwrap().to_owned();
    gina.wait_status(&id, "ready", Duration::from_secs(120)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, m) = gina.get(&format!("/api/sessions/{id}/messages")).await;
        if m.to_string().contains("PONG from fake model") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no answer: {m}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pid_file = dir.path().join(format!("sessions/{id}/opencode.pid"));
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    app.shutdown().await;
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "OpenCode stops with the control plane");

    let app = Application::build(test_config(dir.path().into(), None)).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let gina = sign_in(&base, "gina@example.com").await;
    let (status, again) = gina.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "the session survived: {again}");
    gina.wait_status(&id, "ready", Duration::from_secs(120)).await;
    let (_, m) = gina.get(&format!("/api/sessions/{id}/messages")).await;
    assert!(m.to_string().contains("PONG from fake model"), "OpenCode history intact: {m}");
    assert_eq!(gina.send("DELETE", &format!("/api/sessions/{id}"), None).await.0, 204);
    app.shutdown().await;
}
