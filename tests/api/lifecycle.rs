//! The foundation scenario: providers, a private session answering live, visibility for a
//! second user, the pass-through, permissions, failures and teardown — on real OpenCode.

use std::time::Duration;

use cake_tests::app::{PROVIDER_KEY, TestUser, anonymous, spawn_app};
use serde_json::{Value, json};

const BOOT: Duration = Duration::from_secs(120);
const ANSWER: Duration = Duration::from_secs(90);

fn opencode_type(f: &cake_tests::sse::SseFrame) -> Option<&str> {
    (f.event.as_deref() == Some("opencode")).then(|| f.data["type"].as_str()).flatten()
}

fn opencode_pids(data_dir: &std::path::Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else { continue };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cwd.starts_with(data_dir) && String::from_utf8_lossy(&cmd).contains("serve") {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_to_end_on_real_opencode() {
    let mut app = spawn_app().await;
    let admin = app.sign_up("alice").await;
    let bob = app.sign_up("bob").await;
    let (_, me) = admin.get("/api/me").await;
    assert_eq!(me["role"], "admin", "the first account is an admin");
    let (_, me) = bob.get("/api/me").await;
    assert_eq!(me["role"], "member");

    // No provider yet: creating a session is refused, and nothing is created.
    let (status, body) = admin.send("POST", "/api/sessions", Some(json!({"private": true}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("no_provider")), "{body}");
    let (_, list) = admin.get("/api/sessions").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    // Only admins configure providers; secrets read back masked; the mask keeps the key.
    let (status, _) = bob.send("PUT", "/api/admin/providers", Some(app.provider_body("x", None))).await;
    assert_eq!(status, 403);
    let (status, saved) = admin
        .send("PUT", "/api/admin/providers", Some(app.provider_body(PROVIDER_KEY, Some(json!({"bash": "ask"})))))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["providers"]["fake"]["options"]["apiKey"], "%%SECRET%%");
    let (_, shown) = admin.get("/api/admin/providers").await;
    assert_eq!(shown["providers"]["fake"]["options"]["apiKey"], "%%SECRET%%");
    assert!(!shown.to_string().contains(PROVIDER_KEY));
    let (status, _) = admin
        .send("PUT", "/api/admin/providers", Some(app.provider_body("%%SECRET%%", Some(json!({"bash": "ask"})))))
        .await;
    assert_eq!(status, 200);

    // A private session with a first prompt: observe it from creation to the answer.
    let session = admin.create_session(true, Some("Say PONG")).await;
    let id = session["id"].as_str().unwrap().to_owned();
    assert_eq!(session["status"], "provisioning");
    assert_eq!(session["private"], true);
    assert_eq!(session["owner"]["email"], admin.email);
    let mut events = admin.events(&id, None).await;
    let (first, _) = events.until(Duration::from_secs(5), |_| true).await.expect("a status frame at connect");
    assert_eq!(first.event.as_deref(), Some("status"));
    assert!(first.id.is_some());
    let (_, before_idle) = events
        .until(BOOT + ANSWER, |f| opencode_type(f) == Some("session.idle"))
        .await
        .expect("the agent answers and goes idle");
    let deltas: String = before_idle
        .iter()
        .filter(|f| opencode_type(f) == Some("message.part.delta"))
        .filter_map(|f| f.data["properties"]["delta"].as_str())
        .collect();
    assert!(deltas.contains("PONG"), "text deltas carry the model's answer: {deltas:?}");
    let statuses: Vec<&str> = before_idle
        .iter()
        .filter(|f| f.event.as_deref() == Some("status"))
        .filter_map(|f| f.data["status"].as_str())
        .collect();
    assert!(statuses.contains(&"ready"), "status frames show the lifecycle: {statuses:?}");
    let ids: Vec<u64> = before_idle.iter().filter_map(|f| f.id.as_deref()?.parse().ok()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "frame ids increase");
    // The key the model received is the one stored before the masked PUT.
    assert!(app.model.requests().iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {PROVIDER_KEY}"))));

    let (status, messages) = admin.get(&format!("/api/sessions/{id}/messages")).await;
    assert_eq!(status, 200);
    let text = messages.to_string();
    assert!(text.contains("Say PONG") && text.contains("PONG from fake model"), "{text}");
    let (_, s) = admin.get(&format!("/api/sessions/{id}")).await;
    assert_eq!((s["status"].as_str(), s["activity"].as_str()), (Some("ready"), Some("idle")));

    // Resume: a reconnect with Last-Event-ID replays only what came after it.
    let resume_from = ids[ids.len() / 2].to_string();
    let mut resumed = admin.events(&id, Some(&resume_from)).await;
    let (replayed, _) = resumed.until(Duration::from_secs(5), |_| true).await.unwrap();
    assert!(replayed.id.as_deref().unwrap().parse::<u64>().unwrap() > resume_from.parse::<u64>().unwrap());

    // Bob: 404 on the private session, never listed.
    assert_private_hidden(&bob, &id).await;

    // A public session: Bob can read and observe, but every write is 403.
    let public = admin.create_session(false, None).await;
    let pid = public["id"].as_str().unwrap().to_owned();
    admin.wait_status(&pid, "ready", BOOT).await;
    let (_, bob_list) = bob.get("/api/sessions").await;
    let listed: Vec<&str> = bob_list["items"].as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(listed, vec![pid.as_str()], "Bob sees only the public session");
    assert_eq!(bob.get(&format!("/api/sessions/{pid}")).await.0, 200);
    assert_eq!(bob.get(&format!("/api/sessions/{pid}/messages")).await.0, 200);
    let mut bob_events = bob.events(&pid, None).await;
    assert!(bob_events.next(Duration::from_secs(5)).await.is_some());
    for (method, path, body) in [
        ("PATCH", format!("/api/sessions/{pid}"), Some(json!({"title": "mine now"}))),
        ("DELETE", format!("/api/sessions/{pid}"), None),
        ("POST", format!("/api/sessions/{pid}/messages"), Some(json!({"text": "hi"}))),
        ("POST", format!("/api/sessions/{pid}/abort"), None),
        ("POST", format!("/api/sessions/{pid}/permissions/per_x"), Some(json!({"reply": "once"}))),
        ("POST", format!("/api/sessions/{pid}/opencode/session"), Some(json!({}))),
    ] {
        let (status, body) = bob.send(method, &path, body).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_owner", "{method} {path}");
    }
    let (_, still) = admin.get(&format!("/api/sessions/{pid}")).await;
    assert_eq!(still["title"], "test session", "a refused write changes nothing");

    // Anonymous: 401 everywhere.
    for path in [format!("/api/sessions/{pid}"), format!("/api/sessions/{id}/messages"), "/api/sessions".into()] {
        let resp = anonymous().get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
    }

    // The owner may patch.
    let (status, patched) =
        admin.send("PATCH", &format!("/api/sessions/{pid}"), Some(json!({"title": "Renamed"}))).await;
    assert_eq!((status, patched["title"].as_str()), (200, Some("Renamed")));

    // Made private while Bob watches (Cake's stream and OpenCode's own through the pass-through):
    // both end, and the session disappears for him.
    let raw = bob.client.get(format!("{}/api/sessions/{pid}/opencode/event", app.base)).send().await.unwrap();
    assert_eq!(raw.status(), 200);
    let mut bob_raw = cake_tests::sse::SseReader::new(raw);
    assert!(bob_raw.next(Duration::from_secs(10)).await.is_some(), "OpenCode's server.connected");
    let (status, _) = admin.send("PATCH", &format!("/api/sessions/{pid}"), Some(json!({"private": true}))).await;
    assert_eq!(status, 200);
    assert!(bob_events.closes_within(Duration::from_secs(5)).await, "a watcher who lost access is cut off");
    assert!(bob_raw.closes_within(Duration::from_secs(5)).await, "so is a raw OpenCode event stream");
    assert_eq!(bob.get(&format!("/api/sessions/{pid}")).await.0, 404);
    let (status, _) = admin.send("PATCH", &format!("/api/sessions/{pid}"), Some(json!({"private": false}))).await;
    assert_eq!(status, 200);

    // Pass-through: OpenCode's own routes for the owner, reads for observers, never secrets.
    let (status, oc_sessions) = admin.get(&format!("/api/sessions/{id}/opencode/session")).await;
    assert_eq!(status, 200, "{oc_sessions}");
    assert!(oc_sessions.as_array().is_some_and(|a| !a.is_empty()));
    let (status, _) = bob.get(&format!("/api/sessions/{pid}/opencode/session/status")).await;
    assert_eq!(status, 200, "observers may read");
    assert_eq!(bob.get(&format!("/api/sessions/{id}/opencode/session")).await.0, 404, "not someone else's private");
    for spelling in [
        "/config",
        "/config/providers",
        "/provider",
        "//config",
        "/./config",
        "/session/../config",
        "/%63onfig",
        "/%2e%2e/provider",
        "/CONFIG",
        "/global/config",
        "/auth/fake",
        "/api/provider",
        "/api/model",
        "/experimental/console",
    ] {
        let resp = admin.client.get(format!("{}/api/sessions/{id}/opencode{spelling}", app.base)).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert!((400..500).contains(&status), "{spelling} answered {status}");
        assert!(!body.contains(PROVIDER_KEY) && !body.contains("apiKey"), "{spelling} leaked: {body}");
    }
    let (status, _) = admin.get(&format!("/api/sessions/{id}/opencode/path?directory=/etc")).await;
    assert_eq!(status, 200);
    let (_, path) = admin.get(&format!("/api/sessions/{id}/opencode/path?directory=/etc")).await;
    assert_ne!(path["directory"], "/etc", "directory parameters are stripped: {path}");
    for sneaky in ["?x=?directory=/etc", "?x=%3Fdirectory%3D/etc", "?DIRECTORY=/etc"] {
        let (status, path) = admin.get(&format!("/api/sessions/{id}/opencode/path{sneaky}")).await;
        assert_eq!(status, 200);
        assert_ne!(path["directory"], "/etc", "{sneaky} retargeted OpenCode: {path}");
    }
    let resp = admin.client.get(format!("{}/api/sessions/{id}/opencode/path", app.base)).send().await.unwrap();
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));

    // A permission request (bash is "ask") can be answered.
    let (status, _) =
        admin.send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": "RUNBASH please"}))).await;
    assert_eq!(status, 202);
    let (asked, _) = events
        .until(ANSWER, |f| opencode_type(f) == Some("permission.asked"))
        .await
        .expect("OpenCode asks for permission to run bash");
    let permission_id = asked.data["properties"]["id"].as_str().unwrap().to_owned();
    let (status, body) = admin
        .send("POST", &format!("/api/sessions/{id}/permissions/{permission_id}"), Some(json!({"reply": "once"})))
        .await;
    assert_eq!(status, 204, "{body}");
    events.until(ANSWER, |f| opencode_type(f) == Some("permission.replied")).await.expect("the reply reaches OpenCode");
    events.until(ANSWER, |f| opencode_type(f) == Some("session.idle")).await.expect("the agent finishes");
    let (_, messages) = admin.get(&format!("/api/sessions/{id}/messages")).await;
    assert!(messages.to_string().contains("cake-tool-ok"), "the tool ran after the permission was granted");

    // A provider error reaches observers as an OpenCode error event, and the session stays usable.
    admin.send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": "FAIL400"}))).await;
    events.until(ANSWER, |f| opencode_type(f) == Some("session.error")).await.expect("the provider error is relayed");

    // A rate-limited provider: OpenCode retries, the session's activity says so, and the owner aborts.
    let (status, _) =
        admin.send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": "FAIL429"}))).await;
    assert_eq!(status, 202);
    events
        .until(ANSWER, |f| f.event.as_deref() == Some("status") && f.data["activity"] == "retry")
        .await
        .expect("activity becomes retry");
    assert_eq!(admin.get(&format!("/api/sessions/{id}")).await.1["activity"], "retry");
    assert_eq!(admin.send("POST", &format!("/api/sessions/{id}/abort"), None).await.0, 204);
    events
        .until(ANSWER, |f| f.event.as_deref() == Some("status") && f.data["activity"] == "idle")
        .await
        .expect("abort returns the session to idle");

    // OpenCode killed from outside: the session turns failed with a reason.
    let before = opencode_pids(app.data_dir.path());
    assert_eq!(before.len(), 2, "one OpenCode per session: {before:?}");
    let victim = std::fs::read_to_string(app.data_dir.path().join(format!("sessions/{pid}/opencode.pid"))).unwrap();
    std::process::Command::new("kill").args(["-9", victim.trim()]).status().unwrap();
    let failed = admin.wait_status(&pid, "failed", Duration::from_secs(5)).await;
    assert!(failed["statusReason"].as_str().unwrap().contains("signal 9"), "{failed}");
    let (status, body) =
        admin.send("POST", &format!("/api/sessions/{pid}/messages"), Some(json!({"text": "hi"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("session_not_ready")));

    // Delete leaves no process and no files, then the session is gone.
    for sid in [&id, &pid] {
        let (status, _) = admin.send("DELETE", &format!("/api/sessions/{sid}"), None).await;
        assert_eq!(status, 204);
        assert_eq!(admin.get(&format!("/api/sessions/{sid}")).await.0, 404);
    }
    assert!(opencode_pids(app.data_dir.path()).is_empty(), "no OpenCode left");
    assert!(app.session_dirs().is_empty(), "no session files left: {:?}", app.session_dirs());
    assert!(events.closes_within(Duration::from_secs(5)).await, "observers' streams end on delete");
    app.stop().await;
}

async fn assert_private_hidden(other: &TestUser, id: &str) {
    let (status, body) = other.get(&format!("/api/sessions/{id}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("session_not_found")));
    for path in [format!("/api/sessions/{id}/messages"), format!("/api/sessions/{id}/events")] {
        assert_eq!(other.get(&path).await.0, 404, "{path}");
    }
    for (method, path, body) in [
        ("PATCH", format!("/api/sessions/{id}"), Some(json!({"title": "x"}))),
        ("DELETE", format!("/api/sessions/{id}"), None),
        ("POST", format!("/api/sessions/{id}/messages"), Some(json!({"text": "x"}))),
        ("POST", format!("/api/sessions/{id}/abort"), None),
    ] {
        assert_eq!(other.send(method, &path, body).await.0, 404, "{method} {path}");
    }
    for filter in ["all", "public", "private"] {
        let (_, list) = other.get(&format!("/api/sessions?visibility={filter}")).await;
        assert!(!list.to_string().contains(id), "listed under {filter}");
    }
}
