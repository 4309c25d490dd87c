//! Bad input: 4xx with the error envelope, never a 500, and nothing changes.

use cake_tests::app::{TestUser, spawn_app, spawn_app_with};
use serde_json::Value;

async fn raw(user: &TestUser, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = user
        .client
        .request(method.parse().unwrap(), format!("{}{path}", user.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_gets_4xx_with_the_error_shape_and_changes_nothing() {
    let mut app = spawn_app().await;
    let admin = app.sign_up("erin").await;
    let (status, _) = admin.send("PUT", "/api/admin/providers", Some(app.provider_body("k", None))).await;
    assert_eq!(status, 200);
    let zero = "00000000-0000-0000-0000-000000000000";
    let cases: Vec<(&str, String, &str, Vec<u8>)> = vec![
        ("POST", "/api/sessions".into(), "application/json", b"{not json".to_vec()),
        ("POST", "/api/sessions".into(), "application/json", br#"{"title": "x"}"#.to_vec()),
        ("POST", "/api/sessions".into(), "application/json", br#"{"private": "yes"}"#.to_vec()),
        ("POST", "/api/sessions".into(), "application/json", br#"{"private": true, "title": 5}"#.to_vec()),
        ("POST", "/api/sessions".into(), "application/json", br#"{"private": true, "title": "   "}"#.to_vec()),
        ("POST", "/api/sessions".into(), "application/json", br#"{"private": true, "surprise": 1}"#.to_vec()),
        ("POST", "/api/sessions".into(), "application/json", br#"[]"#.to_vec()),
        ("POST", "/api/sessions".into(), "application/json", br#"{"private": true, "initialUserPrompt": ""}"#.to_vec()),
        ("POST", "/api/sessions".into(), "text/plain", b"private=true".to_vec()),
        ("POST", "/api/sessions".into(), "application/json", {
            let mut b = br#"{"private": true, "title": ""#.to_vec();
            b.extend(std::iter::repeat_n(b'a', 2 << 20));
            b.extend(br#""}"#);
            b
        }),
        ("GET", "/api/sessions/not-a-uuid".into(), "application/json", vec![]),
        ("GET", format!("/api/sessions/{zero}"), "application/json", vec![]),
        ("PATCH", format!("/api/sessions/{zero}"), "application/json", br#"{"title": "x"}"#.to_vec()),
        ("GET", "/api/sessions?limit=0".into(), "application/json", vec![]),
        ("GET", "/api/sessions?limit=abc".into(), "application/json", vec![]),
        ("GET", "/api/sessions?cursor=garbage".into(), "application/json", vec![]),
        ("GET", "/api/sessions?visibility=everything".into(), "application/json", vec![]),
        ("POST", "/api/me/tokens".into(), "application/json", br#"{"name": ""}"#.to_vec()),
        ("DELETE", "/api/me/tokens/123".into(), "application/json", vec![]),
        (
            "PUT",
            "/api/admin/providers".into(),
            "application/json",
            br#"{"providers": {}, "defaultModel": "a/b"}"#.to_vec(),
        ),
        (
            "PUT",
            "/api/admin/providers".into(),
            "application/json",
            br#"{"providers": {"p": {}}, "defaultModel": "nope"}"#.to_vec(),
        ),
        (
            "PUT",
            "/api/admin/providers".into(),
            "application/json",
            br#"{"providers": {"p": {"options": {"apiKey": "%%SECRET%%"}}}, "defaultModel": "p/m"}"#.to_vec(),
        ),
        (
            "POST",
            "/api/auth/sign-up/email".into(),
            "application/json",
            br#"{"email": "bad", "password": "long enough", "name": "x"}"#.to_vec(),
        ),
        (
            "POST",
            "/api/auth/sign-up/email".into(),
            "application/json",
            r#"{"email": "Ärger@example.com", "password": "long enough", "name": "x"}"#.as_bytes().to_vec(),
        ),
        ("GET", "/api/no-such-route".into(), "application/json", vec![]),
        ("DELETE", "/api/health".into(), "application/json", vec![]),
    ];
    for (method, path, ct, body) in cases {
        let (status, json) = raw(&admin, method, &path, ct, body).await;
        assert!((400..500).contains(&status), "{method} {path} answered {status}: {json}");
        let code = json["error"]["code"].as_str().unwrap_or_default();
        assert!(!code.is_empty() && json["error"]["message"].is_string(), "{method} {path}: {json}");
    }
    // Oversized bodies are 413 whether or not they announce their length.
    let big = vec![b' '; (1 << 20) + 10];
    let (status, json) = raw(&admin, "POST", "/api/sessions", "application/json", big.clone()).await;
    assert_eq!((status, json["error"]["code"].as_str()), (413, Some("payload_too_large")));
    let chunked = admin
        .client
        .post(format!("{}/api/sessions", admin.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(
            big.chunks(4096).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);

    // Nothing was created, and the provider settings are still the good ones.
    let (_, list) = admin.get("/api/sessions").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let (_, providers) = admin.get("/api/admin/providers").await;
    assert_eq!(providers["defaultModel"], "fake/fake-model");
    let (_, tokens) = admin.get("/api/me/tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn listing_is_keyset_paginated_newest_first() {
    // No runtime can start here (the OpenCode binary does not exist): the rows are what is tested.
    let mut app = spawn_app_with(|c| c.opencode_bin = Some("/nonexistent/opencode".into())).await;
    let admin = app.sign_up("frank").await;
    admin.send("PUT", "/api/admin/providers", Some(app.provider_body("k", None))).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(admin.create_session(false, None).await["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let (_, p1) = admin.get("/api/sessions?limit=2").await;
    let cursor = p1["nextCursor"].as_str().unwrap().to_owned();
    let (_, p2) = admin.get(&format!("/api/sessions?limit=2&cursor={cursor}")).await;
    let (_, p3) = admin.get(&format!("/api/sessions?limit=2&cursor={}", p2["nextCursor"].as_str().unwrap())).await;
    assert!(p3["nextCursor"].is_null());
    let got: Vec<String> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, ids);
    let (_, private) = admin.get("/api/sessions?visibility=private").await;
    assert_eq!(private["items"].as_array().unwrap().len(), 0);
    for id in &ids {
        admin.send("DELETE", &format!("/api/sessions/{id}"), None).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn everything_is_served_under_the_path_prefix() {
    let mut app = cake_tests::app::spawn_app_with(|c| c.path_prefix = "/agents/".into()).await;
    let c = cake_tests::app::anonymous();
    let get = |p: &str| c.get(format!("{}{p}", app.base)).send();
    assert_eq!(get("/agents/api/health").await.unwrap().status(), 200);
    assert_eq!(get("/agents/readyz").await.unwrap().status(), 200);
    assert_eq!(get("/api/health").await.unwrap().status(), 404, "nothing outside the prefix");
    let spec: serde_json::Value = get("/agents/api/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(spec["servers"][0]["url"], "/agents/api");
    let browser = cake_tests::app::browser(&app.base); // follows no redirects
    let root = browser.get(format!("{}/agents/", app.base)).send().await.unwrap();
    assert_eq!(root.headers()["location"], "/agents/api/docs");
    let resp = browser
        .post(format!("{}/agents/api/auth/sign-up/email", app.base))
        .json(&serde_json::json!({"email": "pia@example.com", "password": "correct horse battery", "name": "P"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(browser.get(format!("{}/agents/api/me", app.base)).send().await.unwrap().status(), 200);
    app.stop().await;
}
