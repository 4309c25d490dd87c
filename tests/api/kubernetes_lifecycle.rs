//! The foundation scenario with `CAKE_RUNTIME=kubernetes`: the control plane creates the
//! session's Pod and Secret on a fake API server, a fake kubelet starts the real OpenCode
//! with exactly the env of that pod spec and Secret on the pod's own loopback IP, the pod is
//! reported ready there, and the session is served through "its pod": prompted, answered
//! by the fake model, observed, deleted (the Pod and the Secret are deleted). The owner
//! granted the session a GitHub token: git in the pod gets it through `cake git-credential`.
//!
//! Meanwhile a second control plane starts on the same database and cluster (a rolling
//! update): the ready session is left exactly as it is — no re-provisioning, same pod, same
//! password — and the second control plane serves it too, events included.

use std::time::Duration;

use cake_server::startup::Application;
use cake_tests::app::{PROVIDER_KEY, opencode_bin, sign_in, spawn_app_with, test_config};
use cake_tests::fake_kube::{FakeKube, FakeKubelet, secret_data, use_fake_kube};
use serde_json::{Value, json};

const NS: &str = "agents";
/// The owner's GitHub token in this test.
const GITHUB_TOKEN: &str = "ghp_PodScenarioToken42";
/// This test's pod IP (each test that runs OpenCode uses its own 127.x address).
const POD_IP: &str = "127.0.0.20";

fn opencode_type(f: &cake_tests::sse::SseFrame) -> Option<&str> {
    (f.event.as_deref() == Some("opencode")).then(|| f.data["type"].as_str()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_served_by_its_pod_from_prompt_to_deletion() {
    let kube = FakeKube::start().await;
    let mut app = spawn_app_with(|c| use_fake_kube(c, &kube, NS, 120)).await;
    let admin = app.sign_up("alice").await;
    let (status, _) = admin.send("PUT", "/api/admin/providers", Some(app.provider_body(PROVIDER_KEY, None))).await;
    assert_eq!(status, 200);

    // The owner's GitHub token, granted to the session: its pod gets a broker token.
    let (status, linked) = admin.send("PUT", "/api/me/credentials/github", Some(json!({"token": GITHUB_TOKEN}))).await;
    assert_eq!(status, 200, "{linked}");
    let body = json!({"private": true, "initialUserPrompt": "Say PONG", "credentials": [linked["id"]]});
    let (status, session) = admin.send("POST", "/api/sessions", Some(body)).await;
    assert_eq!(status, 201, "{session}");
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
    // The session's broker material: the token in the Secret, the broker's URL in the pod.
    let broker_token = secret_data(&secret)["CAKE_BROKER_TOKEN"].clone();
    assert!(broker_token.starts_with("cakeb_"), "{broker_token}");
    assert!(!pod.to_string().contains(&broker_token), "the token is read from the Secret");
    assert!(secret_data(&secret).values().all(|v| !v.contains(GITHUB_TOKEN)), "the credential itself stays home");
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let url = env.iter().find(|e| e["name"] == "CAKE_BROKER_URL").expect("CAKE_BROKER_URL in the pod");
    assert_eq!(url["value"], app.base.as_str(), "without CAKE_BROKER_URL: the public URL");

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

    // A second control plane starts beside the first (a rolling update): it leaves the
    // ready session alone — no re-provisioning, the same pod, the same Secret — ...
    let pod_uid = kube.pod(NS, &name).unwrap()["metadata"]["uid"].clone();
    let password = secret_data(&kube.secret(NS, &name).unwrap())["OPENCODE_SERVER_PASSWORD"].clone();
    let writes_before = kube.calls().await.iter().filter(|(m, p)| m != "GET" && !p.contains("/leases")).count();
    let dir2 = tempfile::Builder::new().prefix("cake-test").tempdir_in("/tmp").unwrap();
    let mut config2 = test_config(dir2.path().into(), Some(app.database_url.clone()));
    use_fake_kube(&mut config2, &kube, NS, 120);
    let app2 = Application::build(config2).await.expect("the second control plane starts");
    let base2 = format!("http://127.0.0.1:{}", app2.port());
    let admin2 = sign_in(&base2, &admin.email).await;
    let (_, s) = admin2.get(&format!("/api/sessions/{id}")).await;
    assert_eq!((s["status"].as_str(), &s["statusReason"]), (Some("ready"), &Value::Null), "{s}");
    let frames = events.until(Duration::from_secs(2), |f| f.event.as_deref() == Some("status")).await;
    assert!(frames.is_none(), "the first control plane's observers see no status change: {frames:?}");
    assert_eq!(kube.pod(NS, &name).unwrap()["metadata"]["uid"], pod_uid, "the same pod");
    assert_eq!(secret_data(&kube.secret(NS, &name).unwrap())["OPENCODE_SERVER_PASSWORD"], password);
    let writes_after = kube.calls().await.iter().filter(|(m, p)| m != "GET" && !p.contains("/leases")).count();
    assert_eq!(writes_after, writes_before, "nothing written to the cluster: {:?}", kube.calls().await);

    // ... and serves it too: a prompt through the second one, its answer on the second
    // one's event stream (relayed there, though the first one started the session).
    let mut events2 = admin2.events(&id, None).await;
    let (status, _) =
        admin2.send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": "again"}))).await;
    assert_eq!(status, 202);
    let (_, frames2) = events2
        .until(Duration::from_secs(90), |f| opencode_type(f) == Some("session.idle"))
        .await
        .expect("the answer reaches the second control plane's observers");
    assert!(frames2.iter().any(|f| opencode_type(f) == Some("message.part.delta")), "{frames2:?}");
    // The first one's observers get it as well.
    events.until(Duration::from_secs(90), |f| opencode_type(f) == Some("session.idle")).await.expect("a second answer");
    drop(events2);
    app2.shutdown().await;

    // git in the pod gets the owner's token through `cake git-credential` (configured by the
    // real init script) and the broker.
    let fill = "RUNCMD: printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill";
    let (status, _) = admin.send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": fill}))).await;
    assert_eq!(status, 202);
    events.until(Duration::from_secs(90), |f| opencode_type(f) == Some("session.idle")).await.expect("the tool runs");
    let (_, messages) = admin.get(&format!("/api/sessions/{id}/messages")).await;
    assert!(messages.to_string().contains(&format!("password={GITHUB_TOKEN}")), "{messages}");

    // A follow-up prompt goes to the same pod.
    let (status, _) = admin.send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": "again"}))).await;
    assert_eq!(status, 202);
    events.until(Duration::from_secs(90), |f| opencode_type(f) == Some("session.idle")).await.expect("a third answer");

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
        config.runtime = cake_server::config::RuntimeKind::Kubernetes;
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
