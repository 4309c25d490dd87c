//! The one HTTP error of the API: `{"error": {"code": "<stable_snake_case>", "message": "…"}}`
//! at every status (DESIGN.md, "HTTP contract"). [`ApiError::from`] on a [`CoreError`] is the
//! only place that picks a status for a domain error; [`envelope`] gives errors raised outside
//! the handlers (unknown routes, unparsable bodies, oversized payloads) the same shape.

use cake_core::CoreError;
use cake_core::error::Resource;
use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use poem_openapi::{ApiResponse, Object, payload::Json};

/// The error envelope's inner object.
#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    /// Stable, snake_case; clients branch on it.
    pub code: String,
    /// Human explanation; may change.
    pub message: String,
}

/// The error envelope.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Every error response of the API.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or a value is invalid (`invalid_request`, `invalid_input`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid identity (`unauthenticated`) or wrong credentials (`invalid_credentials`).
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The caller may see the resource but not do this (`not_owner`, `not_admin`), or the
    /// request is refused (`csrf_origin`, `internal_email`, `oidc_refused`, `invalid_state`).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource, or one the caller must not know about (`session_not_found`, …).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Conflicts with the current state (`no_provider`, `session_not_ready`, `email_taken`, …).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// Too many attempts (`rate_limited`); `Retry-After` says when to try again.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
    /// The request body is over 1 MiB (`payload_too_large`).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// A bug; the cause is logged, never sent (`internal`).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A dependency is unavailable (`unavailable`): the data plane, the database.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The envelope with a code and message.
pub fn body(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.into() } })
}

/// An error response with any status, in the envelope.
pub fn response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    body(code, message).with_status(status).into_response()
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Unauthenticated => Self::Unauthorized(body("unauthenticated", "sign in first")),
            CoreError::InvalidCredentials => Self::Unauthorized(body("invalid_credentials", e.to_string())),
            CoreError::NotFound(r) => {
                let code = match r {
                    Resource::Session => "session_not_found",
                    Resource::ApiToken => "token_not_found",
                    Resource::User => "user_not_found",
                    Resource::Credential => "credential_not_found",
                };
                Self::NotFound(body(code, e.to_string()))
            }
            CoreError::Disabled(_) => Self::NotFound(body("not_found", e.to_string())),
            CoreError::Forbidden(msg) => {
                let code = if msg.contains("administrator") { "not_admin" } else { "not_owner" };
                Self::Forbidden(body(code, msg))
            }
            CoreError::Refused { code, message } => Self::Forbidden(body(code, message)),
            CoreError::RateLimited { retry_after_secs } => {
                Self::TooManyRequests(body("rate_limited", e.to_string()), retry_after_secs.to_string())
            }
            CoreError::Conflict { code, message } => Self::Conflict(body(code, message)),
            CoreError::InvalidInput { .. } => Self::BadRequest(body("invalid_input", e.to_string())),
            CoreError::Unavailable(msg) => {
                tracing::warn!(reason = %msg, "dependency unavailable");
                Self::Unavailable(body("unavailable", msg))
            }
            CoreError::Internal(source) => {
                tracing::error!(error = %source, "request failed");
                Self::Internal(body("internal", "internal error; see the server log"))
            }
        }
    }
}

/// The result of every API operation.
pub type ApiResult<T> = Result<T, ApiError>;

/// The error code used for a status when the error did not come from a handler.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        411 => "length_required",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "too_many_requests",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "invalid_request",
    }
}

/// Rewrites any error response that is not already the JSON envelope into it, keeping the
/// status and using the original text (poem-openapi's parse errors are precise) as message.
pub async fn envelope<E: Endpoint>(ep: E, req: Request) -> poem::Result<Response> {
    let resp = ep.get_response(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(resp);
    }
    let is_json = resp
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(resp);
    }
    let (parts, b) = resp.into_parts();
    let text = b.into_string().await.unwrap_or_default();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().chars().take(500).collect()
    };
    let code = code_for_status(status);
    let mut out = response(status, code, message);
    for (name, value) in parts.headers.iter() {
        if name != poem::http::header::CONTENT_TYPE && name != poem::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_domain_error_has_one_status_and_code() {
        let cases: Vec<(CoreError, u16, &str)> = vec![
            (CoreError::Unauthenticated, 401, "unauthenticated"),
            (CoreError::InvalidCredentials, 401, "invalid_credentials"),
            (CoreError::NotFound(Resource::Session), 404, "session_not_found"),
            (CoreError::NotFound(Resource::ApiToken), 404, "token_not_found"),
            (CoreError::Forbidden("only the session's owner may do this"), 403, "not_owner"),
            (CoreError::Forbidden("only administrators may do this"), 403, "not_admin"),
            (CoreError::Conflict { code: "no_provider", message: "x".into() }, 409, "no_provider"),
            (CoreError::Refused { code: "internal_email", message: "x".into() }, 403, "internal_email"),
            (CoreError::RateLimited { retry_after_secs: 7 }, 429, "rate_limited"),
            (CoreError::invalid("title", "bad"), 400, "invalid_input"),
            (CoreError::Disabled("x"), 404, "not_found"),
            (CoreError::Unavailable("db".into()), 503, "unavailable"),
            (CoreError::internal("boom"), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let resp = ApiError::from(err).into_response();
            assert_eq!(resp.status().as_u16(), status, "{code}");
            let text = futures::executor::block_on(resp.into_body().into_string()).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], code);
            assert!(!text.contains("boom"), "internal causes are never sent");
        }
    }
}
