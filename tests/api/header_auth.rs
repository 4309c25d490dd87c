//! Header authentication, rule by rule as seed 002 states it, against the real server and a
//! real PostgreSQL; then the hardening beyond the seed (trusted proxies, JWKS verification).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cake_server::config::Config;
use cake_tests::app::{TestApp, anonymous, spawn_app_with};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const JWT: &str = "x-auth-request-access-token";
const EMAIL: &str = "x-auth-request-email";
const USER: &str = "x-auth-request-user";

/// The seed's example: oauth2-proxy's three headers.
fn seed_example(c: &mut Config) {
    c.header_auth.enabled = true;
    c.header_auth.jwt_header = Some(JWT.into());
    c.header_auth.email_header = Some(EMAIL.into());
    c.header_auth.user_header = Some(USER.into());
}

/// A JWT as a proxy forwards it; header auth only decodes it, so the signature is irrelevant.
fn unsigned_jwt(claims: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    format!("{header}.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

struct Answer {
    status: u16,
    body: Value,
    cookie: Option<String>,
}

/// `GET /api/me` with these headers and no cookie.
async fn me(app: &TestApp, headers: &[(&str, String)]) -> Answer {
    let mut req = anonymous().get(format!("{}/api/me", app.base));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cookie = resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, body, cookie }
}

async fn get_with_cookie(app: &TestApp, path: &str, cookie: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut req = anonymous().get(format!("{}{path}", app.base)).header("cookie", cookie);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn user_emails(app: &TestApp, admin_cookie: &str) -> Vec<String> {
    let (status, users) = get_with_cookie(app, "/api/admin/users", admin_cookie, &[]).await;
    assert_eq!(status, 200, "{users}");
    users.as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn seed_jwt_only_reads_email_and_name_claims() {
    let mut app = spawn_app_with(|c| {
        c.header_auth.enabled = true;
        c.header_auth.jwt_header = Some(JWT.into());
    })
    .await;
    let jwt = unsigned_jwt(json!({"email": "Jo@Example.com", "name": "Jo Jwt", "sub": "1"}));
    let a = me(&app, &[(JWT, jwt)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.body["email"].as_str(), a.body["name"].as_str()), (Some("jo@example.com"), Some("Jo Jwt")));
    // A regular session: the cookie works on its own and get-session shows it.
    let cookie = a.cookie.expect("the signed session cookie is set on that response");
    assert!(cookie.starts_with("better-auth.session_token="));
    let (status, session) = get_with_cookie(&app, "/api/auth/get-session", &cookie, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(session["user"]["email"], "jo@example.com");
    assert_eq!(session["session"]["userId"], a.body["id"]);
    // Only the JWT header is configured: a plain email header alone signs nobody in.
    assert_eq!(me(&app, &[(EMAIL, "other@example.com".into())]).await.status, 401);
    app.stop().await;
}

#[tokio::test]
async fn seed_headers_only_skip_the_jwt_step() {
    let mut app = spawn_app_with(|c| {
        c.header_auth.enabled = true;
        c.header_auth.email_header = Some(EMAIL.into());
        c.header_auth.user_header = Some(USER.into());
    })
    .await;
    // A JWT in an unconfigured header is not read.
    let stray = unsigned_jwt(json!({"email": "stray@example.com"}));
    let a = me(&app, &[(EMAIL, "hank@example.com".into()), (USER, "Hank H".into()), (JWT, stray)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.body["email"].as_str(), a.body["name"].as_str()), (Some("hank@example.com"), Some("Hank H")));
    assert!(a.cookie.is_some());
    // No name header: the email's local part.
    let b = me(&app, &[(EMAIL, "ivy@example.com".into())]).await;
    assert_eq!(b.body["name"], "ivy");
    app.stop().await;
}

#[tokio::test]
async fn seed_both_present_jwt_wins_per_field_headers_fill_the_rest() {
    let mut app = spawn_app_with(seed_example).await;
    // The JWT has the email but no name: email from the JWT, name from the header.
    let jwt = unsigned_jwt(json!({"email": "from-jwt@example.com"}));
    let a = me(&app, &[(JWT, jwt), (EMAIL, "from-header@example.com".into()), (USER, "Header Name".into())]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["email"], "from-jwt@example.com");
    assert_eq!(a.body["name"], "Header Name");
    // The JWT has the name but no email: name from the JWT, email from the header.
    let jwt = unsigned_jwt(json!({"name": "Jwt Name"}));
    let b = me(&app, &[(JWT, jwt), (EMAIL, "mixed@example.com".into()), (USER, "Header Name".into())]).await;
    assert_eq!((b.body["email"].as_str(), b.body["name"].as_str()), (Some("mixed@example.com"), Some("Jwt Name")));
    app.stop().await;
}

#[tokio::test]
async fn seed_custom_claim_names() {
    let mut app = spawn_app_with(|c| {
        seed_example(c);
        c.header_auth.email_claim = "upn".into();
        c.header_auth.user_claim = "display_name".into();
    })
    .await;
    let jwt = unsigned_jwt(
        json!({"email": "wrong@example.com", "upn": "kim@example.com", "name": "Wrong", "display_name": "Kim K"}),
    );
    let a = me(&app, &[(JWT, jwt)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!((a.body["email"].as_str(), a.body["name"].as_str()), (Some("kim@example.com"), Some("Kim K")));
    app.stop().await;
}

#[tokio::test]
async fn seed_upsert_keeps_one_user_per_email_however_many_requests() {
    let mut app = spawn_app_with(seed_example).await;
    let headers = [(EMAIL, "lee@example.com".to_owned()), (USER, "Lee".to_owned())];
    let first = me(&app, &headers).await;
    assert_eq!(first.status, 200);
    let id = first.body["id"].as_str().unwrap().to_owned();
    // Concurrent and sequential requests without cookies, some with another name or casing.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let base = app.base.clone();
        tasks.push(tokio::spawn(async move {
            let resp = anonymous()
                .get(format!("{base}/api/me"))
                .header(EMAIL, if i % 2 == 0 { "LEE@example.com" } else { "lee@example.com" })
                .header(USER, format!("Lee {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), id, "one user id for one email");
    }
    // A brand-new email arriving on many connections at once still makes one user.
    let mut racing = Vec::new();
    for _ in 0..8 {
        let base = app.base.clone();
        racing.push(tokio::spawn(async move {
            let resp = anonymous().get(format!("{base}/api/me")).header(EMAIL, "rae@example.com").send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in racing {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one user for a new email however many first requests race");
    // The first user of an empty installation is an admin, so it can list everyone.
    assert_eq!(user_emails(&app, first.cookie.as_deref().unwrap()).await, vec!["lee@example.com", "rae@example.com"]);
    let (_, me_again) = get_with_cookie(&app, "/api/me", first.cookie.as_deref().unwrap(), &[]).await;
    assert_eq!(me_again["name"], "Lee", "an existing user keeps their name");
    app.stop().await;
}

#[tokio::test]
async fn seed_a_valid_cookie_is_never_overridden_by_headers() {
    let mut app = spawn_app_with(seed_example).await;
    let mona = me(&app, &[(EMAIL, "mona@example.com".into())]).await;
    let cookie = mona.cookie.unwrap();
    let other = [(EMAIL, "ned@example.com".to_owned()), (JWT, unsigned_jwt(json!({"email": "ned@example.com"})))];
    let (status, body) = get_with_cookie(&app, "/api/me", &cookie, &other).await;
    assert_eq!((status, body["email"].as_str()), (200, Some("mona@example.com")));
    assert_eq!(user_emails(&app, &cookie).await, vec!["mona@example.com"], "no user was made for the headers");
    // A cookie that is not valid does not block header auth.
    let (status, body) = get_with_cookie(&app, "/api/me", "better-auth.session_token=forged.AAAA", &other).await;
    assert_eq!((status, body["email"].as_str()), (200, Some("ned@example.com")));
    app.stop().await;
}

#[tokio::test]
async fn seed_disabled_means_headers_are_ignored() {
    let mut app = spawn_app_with(|c| {
        seed_example(c);
        c.header_auth.enabled = false;
    })
    .await;
    let jwt = unsigned_jwt(json!({"email": "olga@example.com"}));
    let a = me(&app, &[(JWT, jwt), (EMAIL, "olga@example.com".into())]).await;
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (401, Some("unauthenticated")));
    assert!(a.cookie.is_none());
    app.stop().await;
}

#[tokio::test]
async fn seed_an_undecodable_jwt_falls_back_to_the_headers_never_5xx() {
    let mut app = spawn_app_with(seed_example).await;
    for garbage in [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        format!("{}.{}.x", URL_SAFE_NO_PAD.encode("{}"), URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{}.x", URL_SAFE_NO_PAD.encode("{}"), URL_SAFE_NO_PAD.encode(r#"{"email": 42}"#)),
        format!("{}.{}.x", URL_SAFE_NO_PAD.encode("{}"), "!!not-base64!!"),
    ] {
        let a = me(&app, &[(JWT, garbage.clone()), (EMAIL, "pat@example.com".into())]).await;
        assert_eq!((a.status, a.body["email"].as_str()), (200, Some("pat@example.com")), "{garbage:?}");
        // Without a fallback header there is simply no identity.
        let b = me(&app, &[(JWT, garbage.clone())]).await;
        assert_eq!(b.status, 401, "{garbage:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn seed_internal_emails_are_refused_before_a_user_is_created() {
    let mut app = spawn_app_with(seed_example).await;
    let admin = app.sign_up("admin").await;
    for (name, headers) in [
        ("email header", vec![(EMAIL, "robot@cake.internal".to_owned())]),
        ("jwt claim", vec![(JWT, unsigned_jwt(json!({"email": "Robot@Cake.Internal"})))]),
        ("subdomain", vec![(EMAIL, "robot@svc.cake.internal".to_owned())]),
    ] {
        let a = me(&app, &headers).await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (403, Some("internal_email")), "{name}");
        assert!(a.cookie.is_none(), "{name}");
    }
    let (_, users) = admin.get("/api/admin/users").await;
    let emails: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, vec!["admin@example.com"], "no user row for an internal email");
    app.stop().await;
}

#[tokio::test]
async fn header_auth_users_in_admin_emails_are_admins() {
    let mut app = spawn_app_with(|c| {
        seed_example(c);
        c.admin_emails = vec!["boss@example.com".into()];
    })
    .await;
    app.sign_up("first").await; // the installation's first user is an admin anyway
    let member = me(&app, &[(EMAIL, "staff@example.com".into())]).await;
    assert_eq!(member.body["role"], "member");
    let boss = me(&app, &[(EMAIL, "Boss@example.com".into())]).await;
    assert_eq!(boss.body["role"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn trusted_proxies_ignore_identity_headers_from_other_peers() {
    // The tests reach the server from 127.0.0.1.
    let mut outside = spawn_app_with(|c| {
        seed_example(c);
        c.header_auth.trusted_proxies = vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()];
    })
    .await;
    let headers = [(EMAIL, "quinn@example.com".to_owned()), ("x-forwarded-for", "10.1.2.3".to_owned())];
    let a = me(&outside, &headers).await;
    assert_eq!((a.status, a.cookie.is_none()), (401, true), "a spoofed X-Forwarded-For does not make a peer trusted");
    outside.stop().await;

    let mut inside = spawn_app_with(|c| {
        seed_example(c);
        c.header_auth.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let a = me(&inside, &headers).await;
    assert_eq!((a.status, a.body["email"].as_str()), (200, Some("quinn@example.com")));
    inside.stop().await;
}

/// Test keys (tests/fixtures) and a JWKS server whose key set can change.
struct Keys {
    url: String,
    set: Arc<Mutex<Vec<Value>>>,
}

fn key(file: &str) -> EncodingKey {
    let pem = std::fs::read(format!("{}/fixtures/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    if file.starts_with("ec") {
        EncodingKey::from_ec_pem(&pem).unwrap()
    } else {
        EncodingKey::from_rsa_pem(&pem).unwrap()
    }
}

fn public_jwk(file: &str, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(&key(file), alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn signed(file: &str, alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, &claims, &key(file)).unwrap()
}

fn exp(in_secs: i64) -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() + in_secs
}

async fn jwks_server(initial: Vec<Value>) -> Keys {
    use poem::{EndpointExt, Route, get, handler, web::Data, web::Json};
    let set = Arc::new(Mutex::new(initial));
    #[handler]
    fn jwks(set: Data<&Arc<Mutex<Vec<Value>>>>) -> Json<Value> {
        Json(json!({"keys": set.lock().unwrap().clone()}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let app = Route::new().at("/jwks", get(jwks)).data(set.clone());
    let acceptor = poem::listener::TcpListener::bind(format!("127.0.0.1:{port}"));
    tokio::spawn(poem::Server::new(acceptor).run(app));
    let url = format!("http://127.0.0.1:{port}/jwks");
    for _ in 0..50 {
        if reqwest::get(&url).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Keys { url, set }
}

#[tokio::test]
async fn jwks_verified_tokens_sign_in_and_bad_ones_are_401() {
    let keys = jwks_server(vec![
        public_jwk("rsa1.pem", Algorithm::RS256, "rsa1"),
        public_jwk("ec1.pem", Algorithm::ES256, "ec1"),
    ])
    .await;
    let url = keys.url.clone();
    let mut app = spawn_app_with(move |c| {
        seed_example(c);
        c.header_auth.jwks_url = Some(url);
    })
    .await;
    let claims = |email: &str, exp_in: i64| json!({"email": email, "name": "Verified", "exp": exp(exp_in)});

    let good = signed("rsa1.pem", Algorithm::RS256, Some("rsa1"), claims("rita@example.com", 300));
    let a = me(&app, &[(JWT, good)]).await;
    assert_eq!((a.status, a.body["email"].as_str()), (200, Some("rita@example.com")), "RS256");
    let good_ec = signed("ec1.pem", Algorithm::ES256, Some("ec1"), claims("sam@example.com", 300));
    let a = me(&app, &[(JWT, good_ec)]).await;
    assert_eq!((a.status, a.body["email"].as_str()), (200, Some("sam@example.com")), "ES256");

    let bad = [
        (
            "forged (another key, a known kid)",
            signed("rsa2.pem", Algorithm::RS256, Some("rsa1"), claims("eve@example.com", 300)),
        ),
        ("expired", signed("rsa1.pem", Algorithm::RS256, Some("rsa1"), claims("eve@example.com", -600))),
        ("unknown kid", signed("rsa2.pem", Algorithm::RS256, Some("nope"), claims("eve@example.com", 300))),
        ("bad signature", unsigned_jwt(claims("eve@example.com", 300))),
        ("garbage", "garbage".to_owned()),
    ];
    for (name, token) in bad {
        let a = me(&app, &[(JWT, token), (EMAIL, "eve@example.com".into())]).await;
        assert_eq!((a.status, a.body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{name}");
        assert!(a.cookie.is_none(), "{name}");
    }
    // With verification on, a plain email header alone is not believed.
    assert_eq!(me(&app, &[(EMAIL, "eve@example.com".into())]).await.status, 401);

    // Key rotation: a new kid appears in the set; the verifier fetches the set again on an
    // unknown kid (at most once per few seconds, so this waits, bounded).
    keys.set.lock().unwrap().push(public_jwk("rsa2.pem", Algorithm::RS256, "rsa2"));
    let rotated = signed("rsa2.pem", Algorithm::RS256, Some("rsa2"), claims("tom@example.com", 300));
    let mut status = 0;
    for _ in 0..40 {
        status = me(&app, &[(JWT, rotated.clone())]).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200, "a rotated-in key is picked up");
    app.stop().await;
}

#[tokio::test]
async fn jwks_issuer_and_audience_are_enforced_when_configured() {
    let keys = jwks_server(vec![public_jwk("rsa1.pem", Algorithm::RS256, "rsa1")]).await;
    let url = keys.url.clone();
    let mut app = spawn_app_with(move |c| {
        seed_example(c);
        c.header_auth.jwks_url = Some(url);
        c.header_auth.jwt_issuer = Some("https://idp.example".into());
        c.header_auth.jwt_audience = Some("cake".into());
    })
    .await;
    let token = |iss: Option<&str>, aud: Option<Value>| {
        let mut c = json!({"email": "wes@example.com", "exp": exp(300)});
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = aud;
        }
        signed("rsa1.pem", Algorithm::RS256, Some("rsa1"), c)
    };
    let cases = [
        ("right issuer and audience", token(Some("https://idp.example"), Some(json!("cake"))), 200),
        ("audience among several", token(Some("https://idp.example"), Some(json!(["other", "cake"]))), 200),
        ("wrong audience", token(Some("https://idp.example"), Some(json!("other"))), 401),
        ("no audience", token(Some("https://idp.example"), None), 401),
        ("wrong issuer", token(Some("https://evil.example"), Some(json!("cake"))), 401),
        ("no issuer", token(None, Some(json!("cake"))), 401),
    ];
    for (name, t, want) in cases {
        assert_eq!(me(&app, &[(JWT, t)]).await.status, want, "{name}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_identity_header_given_twice_is_no_identity() {
    let mut app = spawn_app_with(seed_example).await;
    // A proxy that appends instead of replacing lets the client's own copy through.
    let resp = anonymous()
        .get(format!("{}/api/me", app.base))
        .header(EMAIL, "mallory@example.com")
        .header(EMAIL, "victim@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_proven_email_takes_the_account_over_from_an_earlier_password_sign_up() {
    let mut app = spawn_app_with(seed_example).await;
    app.sign_up("admin").await;
    // Mallory signs up with Victor's address before Victor ever arrives through the proxy.
    let mallory = app.sign_up("victor").await;
    let (_, token) = mallory.send("POST", "/api/me/tokens", Some(json!({"name": "keep"}))).await;
    let token = token["token"].as_str().unwrap().to_owned();
    assert_eq!(mallory.get("/api/me").await.0, 200);
    // Victor arrives through the proxy: same account row, but what the sign-up made is gone.
    let victor = me(&app, &[(EMAIL, "victor@example.com".into())]).await;
    assert_eq!((victor.status, victor.body["id"].as_str()), (200, Some(mallory.id.as_str())));
    assert_eq!(mallory.get("/api/me").await.0, 401, "the sign-up's browser session is revoked");
    let by_token = anonymous().get(format!("{}/api/me", app.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(by_token.status(), 401, "its API tokens are revoked");
    let password = anonymous()
        .post(format!("{}/api/auth/sign-in/email", app.base))
        .json(&json!({"email": "victor@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(password.status(), 401, "its password no longer signs in");
    // Victor's own session keeps working.
    let (status, _) = get_with_cookie(&app, "/api/me", victor.cookie.as_deref().unwrap(), &[]).await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// Session pods run code an agent wrote, inside the network boundary header auth trusts: the
/// control plane ignores identity headers from its own session pods' addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_from_a_session_pod_are_ignored() {
    const POD_IP: &str = "127.0.0.31";
    let kube = cake_tests::fake_kube::FakeKube::start().await;
    let mut app = spawn_app_with(|c| {
        seed_example(c);
        cake_tests::fake_kube::use_fake_kube(c, &kube, "hdr", 600);
    })
    .await;
    let admin = app.sign_up("ada").await;
    assert_eq!(admin.send("PUT", "/api/admin/providers", Some(app.provider_body("sk", None))).await.0, 200);
    let id = admin.create_session(true, None).await["id"].as_str().unwrap().to_owned();
    let name = format!("cake-session-{id}");
    kube.wait_for_pod("hdr", &name, Duration::from_secs(30)).await;
    // The pod runs (OpenCode booting) at its IP; the watcher sees it.
    kube.set_pod_status(
        "hdr",
        &name,
        json!({"phase": "Running", "podIP": POD_IP,
               "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
               "containerStatuses": [{"name": "data-plane", "state": {"running": {}}}]}),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, s) = admin.get(&format!("/api/sessions/{id}")).await;
        if s["statusReason"] == "starting OpenCode" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the watcher never saw the running pod: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let spoof = |from: &str| {
        reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
            .get(format!("{}/api/me", app.base))
            .header(EMAIL, "mallory@example.com")
            .header(USER, "Mallory")
    };
    let resp = spoof(POD_IP).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a session pod cannot claim an identity");
    let (_, users) = admin.get("/api/admin/users").await;
    assert!(!users.to_string().contains("mallory@example.com"), "and no user was created: {users}");
    // The same headers from elsewhere (the proxy) still sign in.
    let resp = spoof("127.0.0.1").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}
