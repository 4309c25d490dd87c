//! Settings (DESIGN.md): the default visibility of new sessions per surface — the
//! organisation's (admins) and each user's own (`null` inherits).

use cake_tests::app::{anonymous, spawn_app};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_override_the_organisations_default_visibility() {
    let mut app = spawn_app().await;
    let admin = app.sign_up("ada").await;
    let member = app.sign_up("bob").await;

    // As Cake ships: web public, Slack threads public, Slack DMs private; nothing overridden.
    let (status, mine) = member.get("/api/me/settings").await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["defaultVisibility"], json!({"web": null, "slackThread": null, "slackDm": null}));
    assert_eq!(
        mine["effectiveDefaultVisibility"],
        json!({"web": "public", "slackThread": "public", "slackDm": "private"})
    );

    // A member's own choice.
    let body = json!({"defaultVisibility": {"web": "private"}});
    let (status, mine) = member.send("PUT", "/api/me/settings", Some(body)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["defaultVisibility"]["web"], "private");
    assert_eq!(mine["effectiveDefaultVisibility"]["web"], "private");

    // Bad input: 400 in the error shape, nothing changed.
    for body in [
        json!({"defaultVisibility": {"web": "secret"}}),
        json!({"defaultVisibility": {"web": true}}),
        json!({"defaultVisibility": {"web": "public", "email": "private"}}),
        json!({"visibility": {}}),
        json!([]),
    ] {
        let (status, err) = member.send("PUT", "/api/me/settings", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {err}");
        assert!(err["error"]["code"].is_string(), "{err}");
    }
    assert_eq!(member.get("/api/me/settings").await.1["defaultVisibility"]["web"], "private");

    // The organisation's defaults are the admins'.
    let org = json!({"defaultVisibility": {"web": "public", "slackThread": "private", "slackDm": "private"}});
    for (method, body) in [("GET", None), ("PUT", Some(org.clone()))] {
        let (status, err) = member.send(method, "/api/admin/settings", body).await;
        assert_eq!((status, err["error"]["code"].as_str()), (403, Some("not_admin")), "{method}");
    }
    assert_eq!(anonymous().get(format!("{}/api/me/settings", app.base)).send().await.unwrap().status(), 401);
    let (status, got) = admin.get("/api/admin/settings").await;
    assert_eq!((status, &got["defaultVisibility"]["slackDm"]), (200, &json!("private")), "{got}");
    let partial = json!({"defaultVisibility": {"web": "private"}});
    assert_eq!(admin.send("PUT", "/api/admin/settings", Some(partial)).await.0, 400, "every surface is required");
    let (status, got) = admin.send("PUT", "/api/admin/settings", Some(org.clone())).await;
    assert_eq!((status, got), (200, org));

    // What the member inherits follows; their own choice stays.
    let (_, mine) = member.get("/api/me/settings").await;
    assert_eq!(
        mine["effectiveDefaultVisibility"],
        json!({"web": "private", "slackThread": "private", "slackDm": "private"})
    );
    let (_, mine) = member.send("PUT", "/api/me/settings", Some(json!({"defaultVisibility": {"web": null}}))).await;
    assert_eq!(mine["effectiveDefaultVisibility"]["web"], "public", "back to the organisation's");
    app.stop().await;
}
