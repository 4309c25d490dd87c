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
use futures::TryStreamExt;
use poem::http::{HeaderMap, HeaderName, Method, StatusCode};
use poem::web::Path;
use poem::{Body, IntoResponse, Request, Response, handler};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::error::ApiError;
use crate::identity::Identity;
use crate::state::AppState;

/// Top-level OpenCode routes that are never forwarded.
const DENIED: [&str; 4] = ["config", "provider", "auth", "global"];

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
    if let Some(first) = segments.first() {
        let first = first.to_ascii_lowercase();
        if DENIED.iter().any(|d| first == *d || first.starts_with(&format!("{d}."))) {
            return Err(PathError::Denied);
        }
    }
    Ok(segments)
}

fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

fn filtered_query(query: Option<&str>) -> String {
    let Some(q) = query else { return String::new() };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or_default();
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy().to_ascii_lowercase();
            !key.is_empty() && key != "directory" && key != "workspace"
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

fn forwardable_request_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    !HOP_BY_HOP.contains(&n)
        && n != "authorization"
        && n != "cookie"
        && n != "content-length"
        && n != "x-opencode-directory"
        && n != "x-opencode-workspace"
        && !n.starts_with("x-forwarded-")
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
    let mut resp =
        Response::builder().status(StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY));
    let mut out_headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n == "set-cookie" || n == "content-length" || n == "www-authenticate" {
            continue;
        }
        if let (Ok(n), Ok(v)) =
            (poem::http::HeaderName::from_bytes(n.as_bytes()), poem::http::HeaderValue::from_bytes(value.as_bytes()))
        {
            out_headers.append(n, v);
        }
    }
    for (n, v) in out_headers.iter() {
        resp = resp.header(n.clone(), v.clone());
    }
    resp.header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_bytes_stream(upstream.bytes_stream().map_err(std::io::Error::other)))
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
        assert_eq!(normalize("/configuration-notes"), Ok(vec!["configuration-notes".to_owned()]));
        assert_eq!(normalize("/a%00b"), Err(PathError::Malformed));
        assert_eq!(normalize("/a%5Cb"), Err(PathError::Malformed));
    }

    #[test]
    fn directory_and_workspace_are_stripped() {
        assert_eq!(filtered_query(Some("directory=/etc&limit=2&Workspace=x&%64irectory=/")), "?limit=2");
        assert_eq!(filtered_query(None), "");
    }
}
