//! `/api/sessions/{id}/opencode/{path}`: an authorized pass-through to the session's own
//! OpenCode server, so OpenCode's SDK works against Cake (DESIGN.md, "HTTP contract").
//!
//! - Observers may use read-only methods (GET, HEAD), the owner every method; the decision is
//!   `SessionService::passthrough`, i.e. the one policy function.
//! - The path is normalised before it is checked — percent-decoded once, empty and `.`
//!   segments dropped, `..` resolved — and the normalised form is what is forwarded, so no
//!   spelling reaches a route other than the one checked. `/config*`, `/provider*`, `/auth/*`
//!   and `/global/*` are never forwarded: they reveal provider keys or act beyond the session.
//! - `directory`/`workspace` query parameters and `x-opencode-directory`/`-workspace` headers
//!   are stripped (they can retarget OpenCode at any directory), and so are the caller's
//!   cookies and credentials; the session's own Basic-auth password is added.
//! - Bodies stream both ways, so `/event` (SSE) works frame by frame.

use std::sync::Arc;

use cake_core::session::SessionId;
use futures::{StreamExt, TryStreamExt};
use poem::http::{HeaderName, Method, StatusCode};
use poem::web::Path;
use poem::{Body, IntoResponse, Request, Response, handler};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::error::ApiError;
use crate::identity::Identity;
use crate::state::AppState;

/// The OpenCode routes (first path segment) that are forwarded: what OpenCode's SDK needs to
/// drive and watch a session. Everything else is refused — notably `/config*`, `/provider*`,
/// `/auth/*`, `/global/*` (they reveal provider keys or act beyond the session), the v2 API
/// under `/api/*` (its provider and credential routes), `/experimental/*` and `/mcp*`.
const ALLOWED: [&str; 16] = [
    "session",
    "event",
    "message",
    "file",
    "find",
    "path",
    "vcs",
    "project",
    "agent",
    "command",
    "skill",
    "lsp",
    "formatter",
    "permission",
    "question",
    "pty",
];

/// Why a path cannot be forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not valid after decoding (bad UTF-8, NUL, backslash).
    Malformed,
    /// A route that is never exposed.
    Denied,
}

/// Normalises a raw (still percent-encoded) path and returns its segments, or refuses it.
pub fn normalize(raw: &str) -> Result<Vec<String>, PathError> {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| PathError::Malformed)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return Err(PathError::Malformed);
    }
    let mut segments: Vec<String> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_owned()),
        }
    }
    match segments.first() {
        Some(first) if ALLOWED.contains(&first.as_str()) => Ok(segments),
        _ => Err(PathError::Denied),
    }
}

fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Rebuilds the query string from decoded pairs, without `directory`/`workspace` (any case),
/// every key and value re-encoded strictly. Forwarding kept pairs verbatim is not enough:
/// OpenCode's router finds a parameter by searching the raw URL for `?name`/`&name`, so a
/// value such as `x=?directory=/` would retarget it; re-encoded, that is `x=%3Fdirectory%3D%2F`.
fn filtered_query(query: Option<&str>) -> String {
    let Some(q) = query else { return String::new() };
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    let kept: Vec<String> = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let (k, v) = (decode(k), decode(v));
            let lower = k.to_ascii_lowercase();
            (!k.is_empty() && lower != "directory" && lower != "workspace")
                .then(|| format!("{}={}", encode_segment(&k), encode_segment(&v)))
        })
        .collect();
    if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) }
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Request headers forwarded to OpenCode: an allowlist, so nothing that identifies or
/// authenticates the user to Cake — cookies, bearer tokens, a proxy's identity headers and
/// access tokens (header auth), `X-Forwarded-*` — ever reaches the session's runtime, where an
/// agent with tools runs. OpenCode's own Basic auth is added by the control plane.
const FORWARDED_REQUEST_HEADERS: [&str; 10] = [
    "accept",
    "accept-language",
    "cache-control",
    "content-type",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "last-event-id",
    "range",
    "user-agent",
];

fn forwardable_request_header(name: &HeaderName) -> bool {
    FORWARDED_REQUEST_HEADERS.contains(&name.as_str())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    crate::error::response(status, code, message)
}

/// The pass-through handler.
#[handler]
pub async fn passthrough(req: &Request, Path((id, _rest)): Path<(String, String)>, body: Body) -> Response {
    let Some(state) = req.data::<Arc<AppState>>() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "state missing");
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "the session id is not a UUID");
    };
    let identity = req.extensions().get::<Identity>().cloned().unwrap_or_default();
    let raw_path = req.uri().path();
    let raw_rest = raw_path.split_once("/opencode").map(|(_, r)| r).unwrap_or_default();
    let segments = match normalize(raw_rest) {
        Ok(s) => s,
        Err(PathError::Malformed) => return error(StatusCode::BAD_REQUEST, "invalid_request", "malformed path"),
        Err(PathError::Denied) => {
            // Authorization first, so the answer never reveals a session's existence.
            if let Err(e) = state.sessions.get(identity.actor().as_ref(), SessionId(id)).await {
                return ApiError::from(e).into_response();
            }
            return error(
                StatusCode::FORBIDDEN,
                "route_not_allowed",
                "this OpenCode route is not exposed (it reveals provider credentials or reaches beyond the session)",
            );
        }
    };
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let (endpoint, _) = match state.sessions.passthrough(identity.actor().as_ref(), SessionId(id), write).await {
        Ok(v) => v,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let path: String = segments.iter().map(|s| format!("/{}", encode_segment(s))).collect();
    let path = if path.is_empty() { "/".to_owned() } else { path };
    let url = format!("{}{}{}", endpoint.base_url, path, filtered_query(req.uri().query()));
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "unsupported method");
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        if forwardable_request_header(name)
            && let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
            )
        {
            headers.append(n, v);
        }
    }
    let upstream_body = reqwest::Body::wrap_stream(body.into_bytes_stream());
    let upstream = state
        .http
        .request(method, url)
        .headers(headers)
        .basic_auth(&endpoint.username, Some(endpoint.password.expose_secret()))
        .body(upstream_body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(session.id = %id, error = %e, "pass-through request failed");
            return error(StatusCode::BAD_GATEWAY, "unavailable", "the session's OpenCode did not answer");
        }
    };
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::builder().status(status);
    for (name, value) in upstream.headers() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || n == "set-cookie"
            || n == "content-length"
            || n == "www-authenticate"
            || n.starts_with("access-control-")
            || n == "content-security-policy"
        {
            continue;
        }
        if let (Ok(n), Ok(v)) =
            (poem::http::HeaderName::from_bytes(n.as_bytes()), poem::http::HeaderValue::from_bytes(value.as_bytes()))
        {
            resp = resp.header(n, v);
        }
    }
    let streaming = upstream
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let bytes = upstream.bytes_stream().map_err(std::io::Error::other);
    let body = if streaming {
        // A long-lived stream ends the moment the caller loses access (made private, deleted).
        let revoked = state.sessions.access_revoked(identity.actor().as_ref(), SessionId(id));
        Body::from_bytes_stream(bytes.take_until(revoked))
    } else {
        Body::from_bytes_stream(bytes)
    };
    // Upstream content is served on Cake's origin: never let it run as a page of Cake.
    resp.header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .header("x-content-type-options", "nosniff")
        .header("content-security-policy", "sandbox; default-src 'none'")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_denied_route_is_denied() {
        for p in [
            "/config",
            "/config/providers",
            "/provider",
            "/provider/auth",
            "/auth/openai",
            "/global/config",
            "/api/provider",
            "/api/model",
            "/experimental/console",
            "/mcp",
            "/",
            "",
            "//config",
            "/./config",
            "/session/../config",
            "/%63onfig",
            "/%2e%2e/config",
            "/session/%2e%2e/provider",
            "/CONFIG",
            "/x/..//provider/",
            "/session%2F..%2Fconfig",
        ] {
            assert_eq!(normalize(p), Err(PathError::Denied), "{p}");
        }
    }

    #[test]
    fn allowed_routes_are_normalised() {
        assert_eq!(normalize("/session//ses_1/./message").unwrap(), vec!["session", "ses_1", "message"]);
        assert_eq!(normalize("/file/content"), Ok(vec!["file".to_owned(), "content".to_owned()]));
        assert_eq!(normalize("/a%00b"), Err(PathError::Malformed));
        assert_eq!(normalize("/a%5Cb"), Err(PathError::Malformed));
    }

    #[test]
    fn directory_and_workspace_are_stripped() {
        assert_eq!(filtered_query(Some("directory=/etc&limit=2&Workspace=x&%64irectory=/")), "?limit=2");
        // A parameter hidden in a value cannot reach OpenCode's raw-URL search.
        assert_eq!(filtered_query(Some("x=?directory=/&path=a%20b")), "?x=%3Fdirectory%3D%2F&path=a%20b");
        assert_eq!(filtered_query(Some("x=%26directory%3D%2F")), "?x=%26directory%3D%2F");
        assert_eq!(filtered_query(None), "");
    }
}
