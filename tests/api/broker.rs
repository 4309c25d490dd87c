//! Credential brokering end to end (DESIGN.md, seed 000) on the local runtime and real
//! OpenCode: a user links a GitHub token, grants it to their own session, and the agent in that
//! session gets it from `git credential fill` — git → `cake git-credential` → the broker route
//! — for the granted hosts only, while the session lives; nobody else can grant or read it,
//! it is stored sealed, and every grant and broker call is in the audit log.

use std::process::Stdio;
use std::time::Duration;

use cake_tests::app::{TestApp, TestUser, anonymous, cake_bin, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const BOOT: Duration = Duration::from_secs(120);
const ANSWER: Duration = Duration::from_secs(90);
const TOKEN: &str = "ghp_BobsFineGrainedToken0123456789";

/// Sends `RUNCMD: <command>` and waits until the agent ran it; returns the tool's output.
async fn run_in_session(user: &TestUser, id: &str, command: &str) -> String {
    let before = user.get(&format!("/api/sessions/{id}/messages")).await.1.as_array().map_or(0, Vec::len);
    let (status, body) = user
        .send("POST", &format!("/api/sessions/{id}/messages"), Some(json!({"text": format!("RUNCMD: {command}")})))
        .await;
    assert_eq!(status, 202, "{body}");
    let deadline = tokio::time::Instant::now() + ANSWER;
    loop {
        let (_, messages) = user.get(&format!("/api/sessions/{id}/messages")).await;
        let new = messages.as_array().map(|m| m[before.min(m.len())..].to_vec()).unwrap_or_default();
        let tool = new
            .iter()
            .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
            .find(|p| p["type"] == "tool" && p["state"]["status"] == "completed");
        let finished = new.iter().any(|m| m.to_string().contains("Tool finished."));
        if let (Some(tool), true) = (tool, finished) {
            return tool["state"]["output"].as_str().unwrap_or_default().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "the agent did not run {command:?}: {messages}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The env of a local session's OpenCode process (its pid file is in the session's dir).
fn session_env(app: &TestApp, id: &str) -> Vec<(String, String)> {
    let pid = std::fs::read_to_string(app.data_dir.path().join("sessions").join(id).join("opencode.pid")).unwrap();
    let raw = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn env_value(env: &[(String, String)], key: &str) -> Option<String> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// Calls the broker route as `cake git-credential` does.
async fn broker(base: &str, token: Option<&str>, host: &str) -> (u16, Value) {
    let mut req =
        anonymous().post(format!("{base}/api/broker/git-credential")).json(&json!({"protocol": "https", "host": host}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Runs `cake git-credential <action>` with git's request on stdin.
async fn helper(action: &str, env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(cake_bin());
    cmd.arg("git-credential")
        .arg(action)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the cake binary runs (cargo test --workspace builds it)");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_github_token_reaches_git_in_the_owners_session_only() {
    assert!(cake_bin().exists(), "{} is missing: run cargo test --workspace", cake_bin().display());
    let mut app = spawn_app().await;
    let admin = app.sign_up("ada").await;
    let bob = app.sign_up("bob").await;
    let provider = app.provider_body("sk-test", Some(json!({"bash": "allow"})));
    assert_eq!(admin.send("PUT", "/api/admin/providers", Some(provider)).await.0, 200);

    // Linking: bad input is a 400 in the error shape and stores nothing.
    for (body, field) in [
        (json!({"token": "two words"}), "token"),
        (json!({"token": ""}), "token"),
        (json!({"token": TOKEN, "hosts": ["https://github.com"]}), "hosts"),
    ] {
        let (status, err) = bob.send("PUT", "/api/me/credentials/github", Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], "invalid_input", "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(field), "{err}");
    }
    for body in [json!({"token": 12345}), json!({"token": TOKEN, "scope": "all"}), json!({})] {
        let (status, err) = bob.send("PUT", "/api/me/credentials/github", Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert!(err["error"]["code"].is_string(), "{err}");
    }
    assert_eq!(bob.get("/api/me/credentials").await.1, json!([]));
    assert_eq!(anonymous().get(format!("{}/api/me/credentials", app.base)).send().await.unwrap().status(), 401);

    let (status, linked) = bob
        .send(
            "PUT",
            "/api/me/credentials/github",
            Some(json!({"token": TOKEN, "hosts": ["GitHub.com", "ghe.example.com:8443"]})),
        )
        .await;
    assert_eq!(status, 200, "{linked}");
    assert!(!linked.to_string().contains(TOKEN), "the token is never returned: {linked}");
    assert_eq!(linked["kind"], "github");
    assert_eq!(linked["hosts"], json!(["ghe.example.com:8443", "github.com"]));
    let credential = linked["id"].as_str().unwrap().to_owned();
    assert_eq!(bob.get("/api/me/credentials").await.1.as_array().unwrap().len(), 1);
    assert_eq!(admin.get("/api/me/credentials").await.1, json!([]), "credentials are per user");

    // Only the credential's owner may grant it: anyone else gets "not found" and no session.
    let body = json!({"private": false, "credentials": [credential]});
    let (status, err) = admin.send("POST", "/api/sessions", Some(body)).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "credential_not_found");
    let (status, err) = bob.send("POST", "/api/sessions", Some(json!({"private": true, "credentials": ["x"]}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_input")), "{err}");
    assert_eq!(admin.get("/api/sessions").await.1["items"], json!([]), "refused creations store nothing");
    // Nor unlink it.
    let (status, err) = admin.send("DELETE", &format!("/api/me/credentials/{credential}"), None).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("credential_not_found")));

    // Bob grants it to his own session.
    let body = json!({"title": "brokered", "private": true, "credentials": [credential]});
    let (status, session) = bob.send("POST", "/api/sessions", Some(body)).await;
    assert_eq!(status, 201, "{session}");
    let granted = session["id"].as_str().unwrap().to_owned();
    bob.wait_status(&granted, "ready", BOOT).await;
    let plain = bob.create_session(true, None).await["id"].as_str().unwrap().to_owned();
    bob.wait_status(&plain, "ready", BOOT).await;

    // The owner sees what the session may use; nobody else does.
    let (status, grants) = bob.get(&format!("/api/sessions/{granted}/credentials")).await;
    assert_eq!(status, 200, "{grants}");
    assert_eq!(grants.as_array().unwrap().iter().map(|c| c["id"].clone()).collect::<Vec<_>>(), [json!(credential)]);
    assert!(!grants.to_string().contains(TOKEN));
    assert_eq!(bob.get(&format!("/api/sessions/{plain}/credentials")).await.1, json!([]));
    let (status, err) = admin.get(&format!("/api/sessions/{granted}/credentials")).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("session_not_found")), "a private session");

    // The agent in the granted session: git asks the helper, the helper asks the broker.
    let fill = "printf 'protocol=https\\nhost=github.com\\n\\n' | git credential fill";
    let output = run_in_session(&bob, &granted, fill).await;
    assert!(output.contains("username=x-access-token"), "{output}");
    assert!(output.contains(&format!("password={TOKEN}")), "{output}");
    // Another host than the granted ones: nothing, and git does not hang on a prompt.
    let other = "printf 'protocol=https\\nhost=gitlab.com\\n\\n' | git credential fill; echo exit=$?";
    let output = run_in_session(&bob, &granted, other).await;
    assert!(!output.contains(TOKEN) && output.contains("exit=128"), "{output}");
    // A session granted nothing has no broker token and no helper.
    let output = run_in_session(
        &bob,
        &plain,
        "echo token=${CAKE_BROKER_TOKEN:-none} helper=$(git config --get credential.helper || echo none)",
    )
    .await;
    assert!(output.contains("token=none helper=none"), "{output}");

    // The runtime got a broker token, not the credential.
    let env = session_env(&app, &granted);
    assert!(env.iter().all(|(_, v)| !v.contains(TOKEN)), "the credential itself is not in the session's env");
    let broker_token = env_value(&env, "CAKE_BROKER_TOKEN").expect("a broker token");
    assert!(broker_token.starts_with("cakeb_"));
    assert_eq!(env_value(&env, "CAKE_BROKER_URL").as_deref(), Some(app.base.as_str()));

    // The helper binary itself, with the session's env, as git runs it.
    let helper_env = [("CAKE_BROKER_URL", app.base.as_str()), ("CAKE_BROKER_TOKEN", broker_token.as_str())];
    let (code, out, _) = helper("get", &helper_env, "protocol=https\nhost=ghe.example.com:8443\n\n").await;
    assert_eq!((code, out.as_str()), (0, format!("username=x-access-token\npassword={TOKEN}\n").as_str()));
    let (code, out, err) = helper("get", &helper_env, "protocol=http\nhost=github.com\n\n").await;
    assert_eq!((code, out.as_str()), (0, ""), "plain http gets nothing");
    assert!(err.contains("no credential"), "{err}");
    let (code, out, err) = helper("get", &[], "protocol=https\nhost=github.com\n\n").await;
    assert_eq!((code, out.as_str()), (0, ""));
    assert!(err.contains("granted no credentials"), "{err}");
    assert_eq!(helper("store", &helper_env, "protocol=https\nhost=github.com\nusername=u\npassword=p\n\n").await.0, 0);
    assert_eq!(helper("frobnicate", &helper_env, "").await.0, 2);

    // The broker route takes broker tokens only.
    assert_eq!(broker(&app.base, None, "github.com").await.0, 401);
    assert_eq!(broker(&app.base, Some("cakeb_forged"), "github.com").await.0, 401);
    let (_, api_token) = bob.send("POST", "/api/me/tokens", Some(json!({"name": "cli"}))).await;
    let (status, err) = broker(&app.base, api_token["token"].as_str(), "github.com").await;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("unauthenticated")), "{err}");
    let (status, body) = broker(&app.base, Some(&broker_token), "github.com").await;
    assert_eq!((status, body["password"].as_str()), (200, Some(TOKEN)));

    // Stored sealed: the token's bytes are nowhere in the database.
    let pool = app.app.as_ref().unwrap().pool().clone();
    let dump: String = sqlx::query_scalar(
        "SELECT concat((SELECT string_agg(encode(secret, 'escape'), '') FROM linked_credentials), \
                (SELECT string_agg(detail::text, '') FROM audit_log), \
                (SELECT string_agg(encode(token_digest, 'escape'), '') FROM session_broker_tokens))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!dump.contains(TOKEN) && !dump.contains(&broker_token), "secrets are stored sealed or digested");

    // A credential unlinked while a session naming it is being stored: 404, and nothing of the
    // session is left (one transaction).
    use cake_core::ports::SessionRepository;
    let repo = cake_adapters::postgres::PgSessionRepository::new(pool.clone());
    let orphan = cake_core::session::SessionId(uuid::Uuid::new_v4());
    let err = repo
        .create(cake_core::ports::NewSession {
            id: orphan,
            owner: cake_core::user::UserId(bob.id.parse().unwrap()),
            title: cake_core::session::Title::parse("orphan").unwrap(),
            visibility: cake_core::session::Visibility::Private,
            pending_prompt: None,
            grants: vec![cake_core::credential::CredentialId(uuid::Uuid::new_v4())],
            broker_token_digest: Some(vec![7; 32]),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, cake_core::CoreError::NotFound(cake_core::error::Resource::Credential)), "{err:?}");
    assert!(repo.get(orphan).await.unwrap().is_none(), "no half-written session");

    // Replacing the token takes effect at the next git operation of the session.
    let (status, _) = bob
        .send("PUT", "/api/me/credentials/github", Some(json!({"token": "ghp_rotated", "hosts": ["github.com"]})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bob.get("/api/me/credentials").await.1[0]["id"], credential.as_str(), "the same credential");
    assert_eq!(broker(&app.base, Some(&broker_token), "github.com").await.1["password"], "ghp_rotated");
    assert_eq!(broker(&app.base, Some(&broker_token), "ghe.example.com:8443").await.0, 404, "hosts replaced too");

    // The audit log (admins only) has the grant and the broker calls, never a secret.
    let (status, err) = bob.get("/api/admin/audit").await;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("not_admin")));
    let (status, page) = admin.get("/api/admin/audit?limit=200").await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    let has = |action: &str, pred: &dyn Fn(&Value) -> bool| items.iter().any(|e| e["action"] == action && pred(e));
    assert!(has("credential.linked", &|e| e["credentialId"] == credential.as_str()));
    assert!(
        has("credential.granted", &|e| e["sessionId"] == granted.as_str() && e["credentialId"] == credential.as_str())
    );
    assert!(has("broker.issued", &|e| e["sessionId"] == granted.as_str() && e["detail"]["host"] == "github.com"));
    assert!(has("broker.denied", &|e| e["detail"]["host"] == "gitlab.com" && e["detail"]["reason"].is_string()));
    assert!(!page.to_string().contains("ghp_"), "no secret in the audit log");
    let (_, first) = admin.get("/api/admin/audit?limit=2").await;
    let cursor = first["nextCursor"].as_str().expect("a next page").to_owned();
    let (_, second) = admin.get(&format!("/api/admin/audit?limit=2&before={cursor}")).await;
    assert!(second["items"][0]["id"].as_i64().unwrap() < first["items"][1]["id"].as_i64().unwrap());
    assert_eq!(admin.get("/api/admin/audit?before=zzz").await.0, 400);
    assert_eq!(admin.get("/api/admin/audit?limit=0").await.0, 400);

    // Unlinking ends access at once; deleting the session revokes its token.
    let (status, _) = bob.send("DELETE", &format!("/api/me/credentials/{credential}"), None).await;
    assert_eq!(status, 204);
    let (status, err) = broker(&app.base, Some(&broker_token), "github.com").await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("no_credential")), "{err}");
    assert_eq!(bob.send("DELETE", &format!("/api/sessions/{granted}"), None).await.0, 204);
    assert_eq!(broker(&app.base, Some(&broker_token), "github.com").await.0, 401, "the token died with the session");
    let (_, page) = admin.get("/api/admin/audit?limit=2").await;
    assert_eq!(page["items"][1]["action"], "credential.unlinked", "{page}");
    assert_eq!(page["items"][0]["action"], "broker.denied", "the call after unlinking: {page}");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_can_have_a_listener_of_its_own_apart_from_the_api() {
    let mut app = spawn_app_with(|c| c.broker_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let broker_base = format!("http://{}", app.app.as_ref().unwrap().broker_addr().expect("the broker's address"));
    let bob = app.sign_up("bob").await;
    assert_eq!(bob.send("PUT", "/api/admin/providers", Some(app.provider_body("sk-test", None))).await.0, 200);

    // The API's listener no longer serves the broker, and the broker's serves nothing else.
    let (status, err) = broker(&app.base, Some("cakeb_x"), "github.com").await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")), "{err}");
    assert_eq!(broker(&broker_base, Some("cakeb_x"), "github.com").await.0, 401);
    for path in ["/api/health", "/api/sessions", "/api/openapi.json", "/api/auth/sign-up/email"] {
        let resp = anonymous().get(format!("{broker_base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path} on the broker's listener");
    }

    // A granted session is told the broker's own address, and git gets its token there.
    let (_, linked) = bob.send("PUT", "/api/me/credentials/github", Some(json!({"token": TOKEN}))).await;
    let body = json!({"private": true, "credentials": [linked["id"]]});
    let (status, session) = bob.send("POST", "/api/sessions", Some(body)).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap();
    bob.wait_status(id, "ready", BOOT).await;
    let env = session_env(&app, id);
    assert_eq!(env_value(&env, "CAKE_BROKER_URL").as_deref(), Some(broker_base.as_str()));
    let token = env_value(&env, "CAKE_BROKER_TOKEN").unwrap();
    let helper_env = [("CAKE_BROKER_URL", broker_base.as_str()), ("CAKE_BROKER_TOKEN", token.as_str())];
    let (code, out, err) = helper("get", &helper_env, "protocol=https\nhost=github.com\n\n").await;
    assert_eq!((code, out), (0, format!("username=x-access-token\npassword={TOKEN}\n")), "{err}");
    app.stop().await;
}
