//! The foundation scenario with `CAKE_RUNTIME=kubernetes`: the control plane creates the
//! session's Pod and Secret on a fake API server, a fake kubelet starts the real OpenCode
//! with exactly the env of that pod spec and Secret on the pod's own loopback IP, the pod is
//! reported ready there, and the session is served through "its pod": prompted, answered
//! by the fake model, observed, deleted (the Pod and the Secret are deleted).

use std::time::Duration;

use cake_server::config::RuntimeKind;
use cake_tests::app::{PROVIDER_KEY, opencode_bin, spawn_app_with};
use cake_tests::fake_kube::{FakeKube, FakeKubelet, secret_data};
use serde_json::{Value, json};

const NS: &str = "agents";
/// This test's pod IP (each test that runs OpenCode uses its own 127.x address).
const POD_IP: &str = "127.0.0.20";

fn opencode_type(f: &cake_tests::sse::SseFrame) -> Option<&str> {
    (f.event.as_deref() == Some("opencode")).then(|| f.data["type"].as_str()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_served_by_its_pod_from_prompt_to_deletion() {
    let kube = FakeKube::start().await;
    let mut app = spawn_app_with(|c| {
        c.runtime = RuntimeKind::Kubernetes;
        c.kube_api_url = Some(kube.uri());
        c.session_namespace = Some(NS.into());
        c.data_plane_image = Some("cake/data-plane:test".into());
        c.data_plane_init_image = Some("cake/data-plane-init:test".into());
        c.data_plane_start_timeout = 120;
    })
    .await;
    let admin = app.sign_up("alice").await;
    let (status, _) = admin.send("PUT", "/api/admin/providers", Some(app.provider_body(PROVIDER_KEY, None))).await;
    assert_eq!(status, 200);

    let session = admin.create_session(true, Some("Say PONG")).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let name = format!("cake-session-{id}");
    let mut events = admin.events(&id, None).await;

    // The "node": OpenCode starts from the pod spec and the Secret the control plane wrote.
    let kubelet = FakeKubelet::run(&kube, NS, &name, POD_IP, &opencode_bin()).await;
    let secret = kube.secret(NS, &name).unwrap();
    assert_eq!(secret_data(&secret)["CAKE_PROVIDER_0_API_KEY"], PROVIDER_KEY, "the provider key travels in the Secret");
    let pod = kube.pod(NS, &name).unwrap();
    assert!(!pod.to_string().contains(PROVIDER_KEY), "and never in the pod spec");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], pod["metadata"]["uid"]);

    let (_, frames) = events
        .until(Duration::from_secs(180), |f| opencode_type(f) == Some("session.idle"))
        .await
        .expect("the agent answers through the pod and goes idle");
    let statuses: Vec<(String, Value)> = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("status"))
        .map(|f| (f.data["status"].as_str().unwrap_or_default().to_owned(), f.data["statusReason"].clone()))
        .collect();
    assert!(
        statuses.iter().any(|(s, r)| s == "starting" && r == "starting OpenCode"),
        "the pod's progress is shown while the session starts: {statuses:?}"
    );
    assert!(statuses.iter().any(|(s, r)| s == "ready" && r.is_null()), "{statuses:?}");
    let deltas: String = frames
        .iter()
        .filter(|f| opencode_type(f) == Some("message.part.delta"))
        .filter_map(|f| f.data["properties"]["delta"].as_str())
        .collect();
    assert!(deltas.contains("PONG"), "{deltas:?}");
    let (status, messages) = admin.get(&format!("/api/sessions/{id}/messages")).await;
    assert_eq!(status, 200);
    let text = messages.to_string();
    assert!(text.contains("Say PONG") && text.contains("PONG from fake model"), "{text}");
    assert!(app.model.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {PROVIDER_KEY}"))));

    // A follow-up prompt goes to the same pod.
    let (status, _) = admin.send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": "again"}))).await;
    assert_eq!(status, 202);
    events.until(Duration::from_secs(90), |f| opencode_type(f) == Some("session.idle")).await.expect("a second answer");

    // Delete: the Pod and the Secret are deleted, then the session is gone.
    let (status, _) = admin.send("DELETE", &format!("/api/sessions/{id}"), None).await;
    assert_eq!(status, 204);
    let calls = kube.calls().await;
    for kind in ["pods", "secrets"] {
        let path = format!("/api/v1/namespaces/{NS}/{kind}/{name}");
        assert!(calls.iter().any(|(m, p)| m == "DELETE" && p.starts_with(&path)), "DELETE {path}: {calls:?}");
    }
    assert!(kube.pod(NS, &name).is_none() && kube.secret(NS, &name).is_none());
    assert_eq!(admin.get(&format!("/api/sessions/{id}")).await.0, 404);
    assert!(events.closes_within(Duration::from_secs(5)).await, "observers' streams end on delete");
    kubelet.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_kubernetes_settings_are_a_clear_startup_error() {
    let database_url = cake_tests::pg::fresh_database().await;
    let dir = tempfile::Builder::new().prefix("cake-test").tempdir_in("/tmp").unwrap();
    for (tweak, expected) in [
        (
            Box::new(|c: &mut cake_server::config::Config| c.data_plane_resources = Some("{cpu: 1}".into()))
                as Box<dyn Fn(&mut cake_server::config::Config)>,
            "CAKE_DATA_PLANE_RESOURCES",
        ),
        (Box::new(|c| c.data_plane_node_selector = Some("[1]".into())), "CAKE_DATA_PLANE_NODE_SELECTOR"),
        (Box::new(|c| c.data_plane_tolerations = Some("{\"key\":1}".into())), "CAKE_DATA_PLANE_TOLERATIONS"),
        (Box::new(|c| c.data_plane_image = None), "CAKE_DATA_PLANE_IMAGE is required"),
    ] {
        let mut config = cake_tests::app::test_config(dir.path().into(), Some(database_url.clone()));
        config.runtime = RuntimeKind::Kubernetes;
        config.kube_api_url = Some("http://127.0.0.1:9".into());
        config.data_plane_image = Some("cake/data-plane:test".into());
        config.data_plane_init_image = Some("cake/data-plane-init:test".into());
        tweak(&mut config);
        let err = match cake_server::startup::Application::build(config).await {
            Ok(_) => panic!("{expected}: the control plane started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{err}");
    }
}
