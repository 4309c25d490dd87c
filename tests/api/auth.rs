//! Sign-up, sign-in, sessions, API tokens and anonymous access.

use cake_tests::app::{anonymous, spawn_app};
use serde_json::{Value, json};

#[tokio::test]
async fn first_account_is_admin_and_later_ones_are_members() {
    let mut app = spawn_app().await;
    let a = app.sign_up("first").await;
    let b = app.sign_up("second").await;
    assert_eq!(a.get("/api/me").await.1["role"], "admin");
    assert_eq!(b.get("/api/me").await.1["role"], "member");
    let (status, body) = anonymous()
        .post(format!("{}/api/auth/sign-up/email", app.base))
        .json(&json!({"email": "FIRST@example.com", "password": "another password", "name": "x"}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    let body: Value = body.json().await.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("email_taken")));
    app.stop().await;
}

#[tokio::test]
async fn sign_in_get_session_and_sign_out() {
    let mut app = spawn_app().await;
    app.sign_up("carol").await;
    let client = cake_tests::app::browser(&app.base);
    let url = |p: &str| format!("{}{p}", app.base);
    let wrong = client
        .post(url("/api/auth/sign-in/email"))
        .json(&json!({"email": "carol@example.com", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = client
        .post(url("/api/auth/sign-in/email"))
        .json(&json!({"email": "nobody@example.com", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_credentials");

    let null: Value = client.get(url("/api/auth/get-session")).send().await.unwrap().json().await.unwrap();
    assert!(null.is_null(), "no session yet: {null}");

    let ok = client
        .post(url("/api/auth/sign-in/email"))
        .json(&json!({"email": "Carol@Example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("better-auth.session_token=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
    );
    let body: Value = ok.json().await.unwrap();
    assert!(body["token"].as_str().is_some_and(|t| t.len() >= 32));
    let session: Value = client.get(url("/api/auth/get-session")).send().await.unwrap().json().await.unwrap();
    assert_eq!(session["user"]["email"], "carol@example.com");
    assert_eq!(session["session"]["userId"], session["user"]["id"]);

    // A tampered cookie is no identity at all.
    let forged = anonymous()
        .get(url("/api/me"))
        .header("cookie", format!("better-auth.session_token={}.AAAA", body["token"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let out = client.post(url("/api/auth/sign-out")).send().await.unwrap();
    assert_eq!(out.status(), 200);
    // The cookie was cleared, and the server-side session is revoked too.
    assert_eq!(client.get(url("/api/me")).send().await.unwrap().status(), 401);
    let replay =
        anonymous().get(url("/api/me")).header("cookie", cookie.split(';').next().unwrap()).send().await.unwrap();
    assert_eq!(replay.status(), 401, "a revoked session's cookie stops working");
    app.stop().await;
}

#[tokio::test]
async fn api_tokens_work_until_revoked() {
    let mut app = spawn_app().await;
    let dave = app.sign_up("dave").await;
    let (status, created) = dave.send("POST", "/api/me/tokens", Some(json!({"name": "ci"}))).await;
    assert_eq!(status, 201);
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("cake_"));
    let (_, list) = dave.get("/api/me/tokens").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&token), "token values are never listed");

    let me = |t: String| {
        let base = app.base.clone();
        async move { anonymous().get(format!("{base}/api/me")).bearer_auth(t).send().await.unwrap() }
    };
    let resp = me(token.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["email"], "dave@example.com");
    assert_eq!(me("cake_not-a-real-token".into()).await.status(), 401);

    let id = created["id"].as_str().unwrap();
    assert_eq!(dave.send("DELETE", &format!("/api/me/tokens/{id}"), None).await.0, 204);
    assert_eq!(me(token).await.status(), 401, "a revoked token stops working");
    assert_eq!(dave.send("DELETE", &format!("/api/me/tokens/{id}"), None).await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn anonymous_requests_get_401_except_public_routes() {
    let mut app = spawn_app().await;
    let c = anonymous();
    for (method, path) in [
        ("GET", "/api/me"),
        ("GET", "/api/me/tokens"),
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/admin/providers"),
        ("GET", "/api/sessions/00000000-0000-0000-0000-000000000000"),
        ("GET", "/api/sessions/00000000-0000-0000-0000-000000000000/events"),
        ("GET", "/api/sessions/00000000-0000-0000-0000-000000000000/opencode/session"),
    ] {
        let mut req = c.request(method.parse().unwrap(), format!("{}{path}", app.base));
        if method == "POST" {
            req = req.json(&json!({"private": true}));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{method} {path}");
    }
    assert_eq!(c.get(format!("{}/api/health", app.base)).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("{}/readyz", app.base)).send().await.unwrap().status(), 200);
    let spec: Value = c.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/sessions"].is_object());
    assert_eq!(c.get(format!("{}/api/docs", app.base)).send().await.unwrap().status(), 200);
    app.stop().await;
}
