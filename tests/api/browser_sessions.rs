//! Browser sessions fit for production: sliding expiry, revocation (sign-out, user removal),
//! `Secure` cookies over https, CSRF protection, sign-in rate limits, and email + password
//! turned off.

use std::time::Duration;

use cake_tests::app::{anonymous, browser, spawn_app, spawn_app_with};
use serde_json::{Value, json};

async fn sign_up(base: &str, client: &reqwest::Client, email: &str) -> reqwest::Response {
    client
        .post(format!("{base}/api/auth/sign-up/email"))
        .json(&json!({"email": email, "password": "correct horse battery", "name": "N"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sessions_slide_while_used_and_expire_when_not() {
    let mut app = spawn_app_with(|c| {
        c.session_max_age = 3;
        c.session_update_age = 1;
    })
    .await;
    let client = browser(&app.base);
    assert_eq!(sign_up(&app.base, &client, "uma@example.com").await.status(), 200);
    let expiry = |v: &Value| {
        time::OffsetDateTime::parse(
            v["session"]["expiresAt"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let first: Value =
        client.get(format!("{}/api/auth/get-session", app.base)).send().await.unwrap().json().await.unwrap();
    // Used after the update age: the expiry moves and the cookie is sent again.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let resp = client.get(format!("{}/api/me", app.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let set = resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    assert!(
        set.as_deref().is_some_and(|c| c.starts_with("better-auth.session_token=") && c.contains("Max-Age=3")),
        "{set:?}"
    );
    let second: Value =
        client.get(format!("{}/api/auth/get-session", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(expiry(&second) > expiry(&first), "sliding refresh: {first} then {second}");
    // Not used for longer than the max age: the server refuses it (the cookie's own Max-Age
    // aside — this client would keep sending it).
    let raw = set.unwrap().split(';').next().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let stale = anonymous().get(format!("{}/api/me", app.base)).header("cookie", raw).send().await.unwrap();
    assert_eq!(stale.status(), 401, "an expired session is refused server-side");
    app.stop().await;
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_url_is_https() {
    let mut app = spawn_app_with(|c| c.public_url = Some("https://agents.example.com".into())).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/api/auth/sign-up/email", app.base))
        .header("origin", "https://agents.example.com")
        .json(&json!({"email": "vic@example.com", "password": "correct horse battery", "name": "V"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Secure-better-auth.session_token="), "{cookie}");
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let me = |cookie: String| {
        let base = app.base.clone();
        async move {
            reqwest::Client::new().get(format!("{base}/api/me")).header("cookie", cookie).send().await.unwrap().status()
        }
    };
    assert_eq!(me(format!("__Secure-better-auth.session_token={value}")).await, 200);
    // Over https only the __Secure- cookie counts: a plain one (which a plain-http attacker or
    // a sibling subdomain could plant) is no identity, and neither are two competing ones.
    assert_eq!(me(format!("better-auth.session_token={value}")).await, 401);
    let twice = format!("__Secure-better-auth.session_token={value}; __Secure-better-auth.session_token={value}");
    assert_eq!(me(twice).await, 401);
    app.stop().await;
}

#[tokio::test]
async fn cross_site_writes_are_refused() {
    let mut app = spawn_app().await;
    let wendy = app.sign_up("wendy").await; // a browser: cookie jar + this site's Origin
    let (status, created) = wendy.send("POST", "/api/me/tokens", Some(json!({"name": "t"}))).await;
    assert_eq!(status, 201, "same-origin write with the cookie");
    let token = created["token"].as_str().unwrap().to_owned();
    // The same cookie, from another site's page, or with no Origin at all.
    let session = wendy.client.get(format!("{}/api/auth/get-session", app.base)).send().await.unwrap();
    assert_eq!(session.status(), 200, "reads are not affected");
    let cookie = wendy_cookie(&app.base, &wendy.client).await;
    for (name, origin) in [("evil origin", Some("https://evil.example")), ("no origin", None)] {
        let mut req = anonymous()
            .post(format!("{}/api/me/tokens", app.base))
            .header("cookie", &cookie)
            .json(&json!({"name": "x"}));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{name}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "csrf_origin", "{name}");
    }
    // After a DNS rebinding a hostile page sends its own host as both Origin and Host.
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let resp = anonymous()
        .post(format!("{}/api/me/tokens", app.base))
        .header("cookie", &cookie)
        .header("origin", format!("http://rebound.example:{port}"))
        .header("host", format!("rebound.example:{port}"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "the Host header is not trusted to say what this site is");
    // Referer counts when Origin is absent.
    let resp = anonymous()
        .post(format!("{}/api/me/tokens", app.base))
        .header("cookie", &cookie)
        .header("referer", format!("{}/some/page", app.base))
        .json(&json!({"name": "via-referer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // API tokens carry no ambient credential: no Origin needed.
    let resp = anonymous()
        .post(format!("{}/api/me/tokens", app.base))
        .bearer_auth(&token)
        .json(&json!({"name": "from-ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // A cross-site page cannot sign anyone in (login CSRF) either.
    let resp = anonymous()
        .post(format!("{}/api/auth/sign-in/email", app.base))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "wendy@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    app.stop().await;
}

/// The session cookie a browser client holds, as a `Cookie` header value.
async fn wendy_cookie(base: &str, client: &reqwest::Client) -> String {
    // Sign in again through the same client to read a fresh Set-Cookie.
    let resp = client
        .post(format!("{base}/api/auth/sign-in/email"))
        .json(&json!({"email": "wendy@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited_per_account_and_per_ip() {
    let mut app = spawn_app_with(|c| {
        c.sign_in_limit_per_account = 3;
        c.sign_in_limit_per_ip = 8;
    })
    .await;
    app.sign_up("xena").await;
    let attempt = |email: &'static str, password: &'static str| {
        let base = app.base.clone();
        async move {
            anonymous()
                .post(format!("{base}/api/auth/sign-in/email"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(attempt("xena@example.com", "wrong password").await.status(), 401);
    }
    let locked = attempt("xena@example.com", "correct horse battery").await;
    assert_eq!(locked.status(), 429, "the account is out of attempts, even with the right password");
    let retry: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    let body: Value = locked.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Per IP: sign-ups and failed sign-ins count (1 + 3 so far; the locked attempt was refused
    // before any password was checked); other accounts from the same address run into it too.
    let mut statuses = Vec::new();
    for email in ["yuri@example.com", "yves@example.com", "yael@example.com", "yann@example.com", "yoko@example.com"] {
        statuses.push(attempt(email, "whatever123").await.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 429], "the client address ran out at 8 failures a minute");
    app.stop().await;
}

#[tokio::test]
async fn email_and_password_can_be_turned_off() {
    let mut app = spawn_app_with(|c| c.email_and_password_enabled = false).await;
    for (path, body) in [
        (
            "/api/auth/sign-up/email",
            json!({"email": "zed@example.com", "password": "correct horse battery", "name": "Z"}),
        ),
        ("/api/auth/sign-in/email", json!({"email": "zed@example.com", "password": "correct horse battery"})),
    ] {
        let resp = anonymous().post(format!("{}{path}", app.base)).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // The spec says so.
    let spec: Value =
        anonymous().get(format!("{}/api/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    for path in ["/auth/sign-up/email", "/auth/sign-in/email"] {
        let text = spec["paths"][path]["post"].to_string();
        assert!(text.contains("CAKE_EMAIL_AND_PASSWORD_ENABLED=false") && text.contains("404"), "{path}: {text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn removing_a_user_revokes_everything_at_once() {
    let mut app = spawn_app().await;
    let admin = app.sign_up("admin").await;
    let bob = app.sign_up("bob").await;
    let (_, token) = bob.send("POST", "/api/me/tokens", Some(json!({"name": "ci"}))).await;
    let token = token["token"].as_str().unwrap().to_owned();
    // Warm the identity caches so removal must really invalidate them.
    assert_eq!(bob.get("/api/me").await.0, 200);
    let by_token = |t: String| {
        let base = app.base.clone();
        async move { anonymous().get(format!("{base}/api/me")).bearer_auth(t).send().await.unwrap().status() }
    };
    assert_eq!(by_token(token.clone()).await, 200);
    // Members cannot remove anyone; admins cannot remove themselves.
    assert_eq!(bob.send("DELETE", &format!("/api/admin/users/{}", admin.id), None).await.0, 403);
    let (status, body) = admin.send("DELETE", &format!("/api/admin/users/{}", admin.id), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("cannot_remove_self")));

    assert_eq!(admin.send("DELETE", &format!("/api/admin/users/{}", bob.id), None).await.0, 204);
    assert_eq!(bob.get("/api/me").await.0, 401, "the browser session is revoked");
    assert_eq!(by_token(token).await, 401, "the API token is revoked");
    let (_, users) = admin.get("/api/admin/users").await;
    assert_eq!(users.as_array().unwrap().len(), 1);
    let (status, body) = admin.send("DELETE", &format!("/api/admin/users/{}", bob.id), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("user_not_found")));
    app.stop().await;
}
