//! The OpenAPI-described HTTP API (DESIGN.md, "HTTP contract"), one `#[OpenApi]` impl per tag.
//! Operations are named `<verb>_<resource>`; each one's first doc line is its summary and the
//! rest lists its error codes.

pub mod admin;
pub mod auth;
pub mod credentials;
pub mod dto;
pub mod fast_json;
pub mod me;
pub mod meta;
pub mod sessions;
pub mod strict;

use poem_openapi::{OpenApiService, Tags};
use serde_json::{Value, json};

/// Tags group operations in the docs and in generated clients.
#[derive(Tags)]
pub enum ApiTags {
    /// Sign-up, sign-in, sign-out and the current browser session (Better Auth's shapes).
    Auth,
    /// The signed-in user and their API tokens.
    Me,
    /// Installation settings (admins only).
    Admin,
    /// Sessions: each one a dedicated OpenCode runtime.
    Sessions,
    /// Linked credentials (GitHub tokens), the broker session runtimes ask through
    /// `cake git-credential`, and the audit log.
    Credentials,
    /// Health.
    Meta,
}

/// Every API struct, in one tuple.
pub type Apis =
    (auth::AuthApi, me::MeApi, admin::AdminApi, sessions::SessionsApi, credentials::CredentialsApi, meta::MetaApi);

/// Builds the OpenAPI service.
pub fn service(server_url: &str) -> OpenApiService<Apis, ()> {
    let apis =
        (auth::AuthApi, me::MeApi, admin::AdminApi, sessions::SessionsApi, credentials::CredentialsApi, meta::MetaApi);
    OpenApiService::new(apis, "Cake Agents", env!("CARGO_PKG_VERSION"))
        .description(
            "Control plane of Cake Agents: every session is an AI coding agent (OpenCode) in its own runtime.\n\n\
             Authenticate with the `better-auth.session_token` cookie (from sign-up/sign-in) or with \
             `Authorization: Bearer <API token>` (create one with `POST /api/me/tokens`). Behind a trusted \
             proxy, identity headers sign users in too (header auth), and `POST /api/auth/sign-in/oauth2` \
             starts an OpenID Connect sign-in. Cookie-authenticated writes must send an `Origin` of this \
             site (403 `csrf_origin` otherwise). Every error is `{\"error\": {\"code\", \"message\"}}`.",
        )
        .server(format!("{}/api", server_url.trim_end_matches('/')))
}

/// The spec as served and committed: poem-openapi's output plus the two security schemes
/// the identity middleware accepts (they are resolved outside poem-openapi's extractors, so
/// that `__Secure-` cookies and header auth fit beside them).
pub fn spec_json(service: &OpenApiService<Apis, ()>, api_base: &str) -> String {
    let mut spec: Value = serde_json::from_str(&service.spec()).unwrap_or_else(|_| json!({}));
    spec["servers"] = json!([{"url": api_base}]);
    spec["components"]["securitySchemes"] = json!({
        "cookieAuth": {
            "type": "apiKey", "in": "cookie", "name": "better-auth.session_token",
            "description": "Signed session cookie set by sign-up/sign-in (`__Secure-` prefixed over HTTPS)."
        },
        "bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "An API token (`cake_…`) from `POST /api/me/tokens`."
        },
        "brokerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "A session's broker token (`cakeb_…`), given to its runtime as `CAKE_BROKER_TOKEN`."
        }
    });
    let public = [
        "/health",
        "/auth/sign-up/email",
        "/auth/sign-in/email",
        "/auth/sign-in/oauth2",
        "/auth/oauth2/callback/{provider_id}",
        "/auth/get-session",
    ];
    if let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, ops) in paths.iter_mut() {
            if public.contains(&path.as_str()) {
                continue;
            }
            let scheme = if path == "/broker/git-credential" {
                json!([{"brokerAuth": []}])
            } else {
                json!([{"cookieAuth": []}, {"bearerAuth": []}])
            };
            if let Some(ops) = ops.as_object_mut() {
                for op in ops.values_mut() {
                    op["security"] = scheme.clone();
                }
            }
        }
    }
    serde_json::to_string_pretty(&spec).unwrap_or_default() + "\n"
}

/// The spec as committed in `openapi.json` (and printed by `cake openapi`).
pub fn spec_for_docs() -> String {
    spec_json(&service("http://127.0.0.1:8080"), "/api")
}
