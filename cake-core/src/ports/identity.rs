use std::net::IpAddr;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::Result;

/// An identity asserted by something other than the password database: a trusted proxy's
/// headers or an OpenID provider. The service upserts the user by `email`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalIdentity {
    /// The email, as asserted (not yet validated).
    pub email: String,
    /// The display name, if one was asserted.
    pub name: Option<String>,
}

/// The identity-bearing parts of one HTTP request: the TCP peer and the values of the headers
/// the [`HeaderIdentity`] asked for ([`HeaderIdentity::header_names`]).
#[derive(Debug, Clone, Default)]
pub struct HeaderRequest {
    /// The address of the TCP peer (never a client-supplied `X-Forwarded-For`).
    pub peer: Option<IpAddr>,
    /// `(lower-case header name, value)` for each configured header present.
    pub headers: Vec<(String, String)>,
}

impl HeaderRequest {
    /// The value of a header (names are compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Identity from a trusted upstream proxy (seed 002, "Header authentication"): an unverified
/// (or, when configured, verified) JWT header and plain email / name headers.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait HeaderIdentity: Send + Sync {
    /// The (lower-case) headers to collect into a [`HeaderRequest`].
    fn header_names(&self) -> Vec<String>;
    /// The asserted identity, `None` when the request carries none (or carries it from a peer
    /// that is not trusted). A token that fails a configured signature check is
    /// [`crate::CoreError::Unauthenticated`].
    async fn identify(&self, request: &HeaderRequest) -> Result<Option<ExternalIdentity>>;
}

/// What an OpenID Connect sign-in needs to remember between the redirect to the provider and
/// the callback; stored server side under a digest of `state`.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// The provider id (`CAKE_OIDC_PROVIDER_ID`).
    pub provider_id: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier, sealed with the [`crate::ports::SecretCipher`] (never stored
    /// in clear).
    pub code_verifier_sealed: Vec<u8>,
    /// Where to send the browser after signing in (a path or a URL on the public origin).
    pub callback_url: String,
    /// When the attempt expires.
    pub expires_at: time::OffsetDateTime,
}

/// An OpenID Connect provider: authorization code flow with PKCE, state and nonce.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait OidcProvider: Send + Sync {
    /// The provider id used in routes (`/api/auth/oauth2/callback/{providerId}`).
    fn provider_id(&self) -> &str;
    /// The URL of the provider's authorization endpoint for this attempt (`S256` PKCE
    /// challenge computed from `code_verifier`).
    async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_verifier: &SecretString,
    ) -> Result<String>;
    /// Exchanges the code, validates the ID token (signature against the issuer's keys, `iss`,
    /// `aud`, expiry, `nonce`) and returns the user's verified identity. A refusal is
    /// [`crate::CoreError::Refused`].
    async fn exchange(
        &self,
        redirect_uri: &str,
        code: &str,
        code_verifier: &SecretString,
        nonce: &str,
    ) -> Result<ExternalIdentity>;
}
