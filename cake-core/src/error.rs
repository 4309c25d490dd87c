//! The domain error. It names no adapter type: adapters convert their own errors into
//! [`CoreError::Internal`] or [`CoreError::Unavailable`], and `cake-server` maps each variant
//! to exactly one HTTP status and stable error code.

use std::fmt;

/// What went wrong, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// No identity was presented, or it was not valid (HTTP 401).
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials were presented and are wrong (HTTP 401, `invalid_credentials`).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// The thing does not exist, or exists but must not be revealed to this actor (HTTP 404).
    #[error("{0} not found")]
    NotFound(Resource),
    /// The actor may see the thing but not do this to it (HTTP 403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The request is refused for a reason with its own stable code (HTTP 403), e.g.
    /// `internal_email` or `csrf_origin`.
    #[error("{message}")]
    Refused {
        /// Stable snake_case code.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// Too many attempts; try again after the given number of seconds (HTTP 429, `rate_limited`).
    #[error("too many attempts; try again in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next attempt is allowed.
        retry_after_secs: u64,
    },
    /// The request conflicts with the current state (HTTP 409) with a stable code.
    #[error("{message}")]
    Conflict {
        /// Stable snake_case code, e.g. `email_taken`.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// The feature is turned off by configuration (HTTP 404, as if the route did not exist).
    #[error("{0} is disabled")]
    Disabled(&'static str),
    /// A value failed to parse (HTTP 400, `invalid_input`).
    #[error("invalid {field}: {problem}")]
    InvalidInput {
        /// The offending field, in the API's spelling.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A dependency (runtime, data plane, database) cannot serve the request now (HTTP 503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the cause is logged, never sent (HTTP 500).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CoreError {
    /// Wraps any error as [`CoreError::Internal`].
    pub fn internal<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> Self {
        Self::Internal(e.into())
    }

    /// Builds [`CoreError::InvalidInput`].
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidInput { field, problem: problem.into() }
    }
}

/// The kinds of things a [`CoreError::NotFound`] can be about; each has its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A Cake session (`session_not_found`).
    Session,
    /// An API token (`token_not_found`).
    ApiToken,
    /// A user (`user_not_found`).
    User,
    /// A linked credential (`credential_not_found`).
    Credential,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Session => "session",
            Resource::ApiToken => "API token",
            Resource::User => "user",
            Resource::Credential => "credential",
        })
    }
}
