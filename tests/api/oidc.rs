//! OpenID Connect sign-in end to end against a real, certified OpenID provider
//! (`oidc-provider`), driven through the whole redirect flow by the test's HTTP client as a
//! browser would: Cake → provider login → provider redirect → Cake callback → signed in.

use cake_server::config::Config;
use cake_tests::app::{TestApp, anonymous, browser, spawn_app_with};
use cake_tests::oidc::{TestIdp, free_port};
use serde_json::{Value, json};

const PROVIDER: &str = "testidp";

/// What the test does to the flow on the way, as an attacker in the middle would.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    Nothing,
    /// Rewrites `state` in the provider's redirect back to Cake.
    State,
    /// Rewrites `nonce` in the authorization request, so the ID token carries another one.
    Nonce,
    /// Delivers the provider's redirect to another browser than the one that started.
    OtherBrowser,
}

struct Setup {
    app: TestApp,
    _idp: TestIdp,
}

async fn setup(public_client: bool, tweak: impl FnOnce(&mut Config)) -> Setup {
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/api/auth/oauth2/callback/{PROVIDER}");
    let client = if public_client {
        json!({"client_id": "cake-public", "token_endpoint_auth_method": "none", "redirect_uris": [redirect]})
    } else {
        json!({"client_id": "cake", "client_secret": "cake-client-secret", "redirect_uris": [redirect]})
    };
    let idp = TestIdp::start(json!([client])).await;
    let issuer = idp.issuer.clone();
    let app = spawn_app_with(move |c| {
        c.listen = ([127, 0, 0, 1], port).into();
        c.oidc.enabled = true;
        c.oidc.provider_id = PROVIDER.into();
        c.oidc.issuer = Some(issuer);
        c.oidc.client_id = Some(if public_client { "cake-public" } else { "cake" }.into());
        c.oidc.client_secret = (!public_client).then(|| "cake-client-secret".to_owned().into());
        tweak(c);
    })
    .await;
    Setup { app, _idp: idp }
}

/// Resolves a `Location` against the URL it came from.
fn resolve(from: &str, location: &str) -> String {
    if location.starts_with("http") {
        return location.to_owned();
    }
    let origin_end =
        from.find("://").map(|i| i + 3).and_then(|i| from[i..].find('/').map(|j| i + j)).unwrap_or(from.len());
    format!("{}{location}", &from[..origin_end])
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers().get("location").unwrap_or_else(|| panic!("no Location in {resp:?}")).to_str().unwrap().to_owned()
}

/// Signs `email` in through the provider; returns Cake's answer to the callback and the
/// browser (its cookie jar).
async fn sign_in(app: &TestApp, email: &str, tamper: Tamper) -> (reqwest::Response, reqwest::Client, String) {
    let browser = browser(&app.base);
    let start = browser
        .post(format!("{}/api/auth/sign-in/oauth2", app.base))
        .json(&json!({"providerId": PROVIDER, "callbackURL": "/welcome?from=oidc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 200);
    assert!(start.headers()["set-cookie"].to_str().unwrap().starts_with("better-auth.oauth_state="));
    let body: Value = start.json().await.unwrap();
    assert_eq!(body["redirect"], true);
    let mut url = body["url"].as_str().unwrap().to_owned();
    for p in ["code_challenge_method=S256", "code_challenge=", "state=", "nonce=", "scope=openid"] {
        assert!(url.contains(p), "{p} in {url}");
    }
    if tamper == Tamper::Nonce {
        let start = url.find("nonce=").unwrap() + 6;
        let end = url[start..].find('&').map_or(url.len(), |i| start + i);
        url.replace_range(start..end, "attacker-chosen-nonce");
    }
    // The provider: authorization request → its login page → the form → back to /auth → Cake.
    let mut callback = None;
    for _ in 0..10 {
        let resp = browser.get(&url).send().await.unwrap();
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let next = resolve(&url, &location(&resp));
            if next.starts_with(&app.base) {
                callback = Some(next);
                break;
            }
            url = next;
            continue;
        }
        assert_eq!(status, 200, "provider page {url}: {}", resp.text().await.unwrap());
        let html = resp.text().await.unwrap();
        let action = html.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("a login form");
        let posted = browser.post(resolve(&url, action)).form(&[("email", email)]).send().await.unwrap();
        assert!(posted.status().is_redirection(), "login: {}", posted.status());
        url = resolve(&url, &location(&posted));
    }
    let mut callback = callback.expect("the provider redirects back to Cake");
    assert!(callback.contains("code=") && callback.contains("state="), "{callback}");
    if tamper == Tamper::State {
        let start = callback.find("state=").unwrap() + 6;
        let end = callback[start..].find('&').map_or(callback.len(), |i| start + i);
        callback.replace_range(start..end, "tampered-state");
    }
    if tamper == Tamper::OtherBrowser {
        let other = cake_tests::app::browser(&app.base);
        let resp = other.get(&callback).send().await.unwrap();
        return (resp, other, callback);
    }
    let resp = browser.get(&callback).send().await.unwrap();
    (resp, browser, callback)
}

async fn me(app: &TestApp, browser: &reqwest::Client) -> (u16, Value) {
    let resp = browser.get(format!("{}/api/me", app.base)).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn oidc_sign_in_through_the_provider_upserts_the_user_by_verified_email() {
    let Setup { mut app, _idp } = setup(false, |c| c.admin_emails = vec!["boss@example.com".into()]).await;
    app.sign_up("first").await; // the installation's first (admin) user signs up with a password
    let (resp, browser, callback) = sign_in(&app, "oscar@example.com", Tamper::Nothing).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), "/welcome?from=oidc");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("better-auth.session_token=") && cookie.contains("HttpOnly"));
    let (status, user) = me(&app, &browser).await;
    assert_eq!(status, 200);
    assert_eq!(
        (user["email"].as_str(), user["name"].as_str()),
        (Some("oscar@example.com"), Some("Name of oscar@example.com"))
    );
    assert_eq!(user["role"], "member");
    let session: Value =
        browser.get(format!("{}/api/auth/get-session", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(session["user"]["id"], user["id"]);

    // The callback works once: replaying it is refused.
    let replay = browser.get(&callback).send().await.unwrap();
    assert_eq!(error_code(replay).await, (403, "invalid_state".into()));

    // Signing in again is the same user; an email in CAKE_ADMIN_EMAILS is an admin.
    let (_, again, _) = sign_in(&app, "oscar@example.com", Tamper::Nothing).await;
    assert_eq!(me(&app, &again).await.1["id"], user["id"]);
    let (_, boss, _) = sign_in(&app, "boss@example.com", Tamper::Nothing).await;
    assert_eq!(me(&app, &boss).await.1["role"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn oidc_a_tampered_state_is_refused() {
    let Setup { mut app, _idp } = setup(false, |_| {}).await;
    let (resp, browser, _) = sign_in(&app, "paula@example.com", Tamper::State).await;
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(error_code(resp).await, (403, "invalid_state".into()));
    assert_eq!(me(&app, &browser).await.0, 401);
    // An untampered callback arriving in another browser (no state cookie: a login-CSRF
    // attempt) is refused as well.
    let (resp, other, _) = sign_in(&app, "paula@example.com", Tamper::OtherBrowser).await;
    assert_eq!(error_code(resp).await, (403, "invalid_state".into()));
    assert_eq!(me(&app, &other).await.0, 401);
    app.stop().await;
}

#[tokio::test]
async fn oidc_a_wrong_nonce_is_refused() {
    let Setup { mut app, _idp } = setup(false, |_| {}).await;
    let (resp, browser, _) = sign_in(&app, "rosa@example.com", Tamper::Nonce).await;
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(error_code(resp).await, (403, "oidc_refused".into()));
    assert_eq!(me(&app, &browser).await.0, 401);
    app.stop().await;
}

#[tokio::test]
async fn oidc_unverified_and_internal_emails_are_refused() {
    let Setup { mut app, _idp } = setup(false, |_| {}).await;
    let admin = app.sign_up("admin").await;
    let (resp, _, _) = sign_in(&app, "unverified-sid@example.com", Tamper::Nothing).await;
    assert_eq!(error_code(resp).await, (403, "oidc_refused".into()));
    let (resp, _, _) = sign_in(&app, "robot@cake.internal", Tamper::Nothing).await;
    assert_eq!(error_code(resp).await, (403, "internal_email".into()));
    let (_, users) = admin.get("/api/admin/users").await;
    assert_eq!(users.as_array().unwrap().len(), 1, "no user row for a refused sign-in: {users}");
    app.stop().await;
}

#[tokio::test]
async fn oidc_public_client_with_pkce_only_side_by_side_with_header_auth_and_passwords() {
    let Setup { mut app, _idp } = setup(true, |c| {
        c.header_auth.enabled = true;
        c.header_auth.email_header = Some("x-auth-request-email".into());
    })
    .await;
    let (resp, browser, _) = sign_in(&app, "tina@example.com", Tamper::Nothing).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(me(&app, &browser).await.1["email"], "tina@example.com");
    // Password sign-up and header auth still work beside it.
    app.sign_up("ulla").await;
    let resp = anonymous()
        .get(format!("{}/api/me", app.base))
        .header("x-auth-request-email", "vera@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn oidc_routes_are_404_when_it_is_off_and_other_providers_are_refused() {
    let mut off = spawn_app_with(|_| {}).await;
    let resp = browser(&off.base)
        .post(format!("{}/api/auth/sign-in/oauth2", off.base))
        .json(&json!({"providerId": PROVIDER}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));
    let resp = anonymous()
        .get(format!("{}/api/auth/oauth2/callback/{PROVIDER}?code=x&state=y", off.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    off.stop().await;

    let Setup { mut app, _idp } = setup(false, |_| {}).await;
    let b = browser(&app.base);
    let other = b
        .post(format!("{}/api/auth/sign-in/oauth2", app.base))
        .json(&json!({"providerId": "github"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(other).await, (403, "unknown_provider".into()));
    let open_redirect = b
        .post(format!("{}/api/auth/sign-in/oauth2", app.base))
        .json(&json!({"providerId": PROVIDER, "callbackURL": "https://evil.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(open_redirect).await, (400, "invalid_input".into()));
    app.stop().await;
}
