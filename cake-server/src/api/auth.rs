//! Sign-up, sign-in (email + password, OpenID Connect), sign-out and get-session, in Better
//! Auth's shapes (the generic OAuth plugin's routes for OIDC).

use cake_core::services::SignedIn;
use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, OpenApi, payload::Json};
use secrecy::{ExposeSecret, SecretString};

use super::ApiTags;
use super::dto::{
    AuthResponse, AuthSessionDto, OAuth2SignInBody, OAuth2SignInResponse, SessionAndUser, SignInBody, SignUpBody,
    SuccessBody, rfc3339,
};
use crate::error::{ApiError, ApiResult, body};
use crate::identity::{Identity, client_ip, cookie_values};
use std::sync::Arc;

use crate::state::AppState;

/// Auth routes.
pub struct AuthApi;

/// A signed-in response with its cookie.
#[derive(ApiResponse)]
pub enum SignedInResponse {
    /// Signed in; the session cookie is set.
    #[oai(status = 200)]
    Ok(Json<AuthResponse>, #[oai(header = "Set-Cookie")] String),
}

/// Sign-out's response, clearing the cookie.
#[derive(ApiResponse)]
pub enum SignedOutResponse {
    /// Signed out; the session is revoked and the cookie cleared.
    #[oai(status = 200)]
    Ok(Json<SuccessBody>, #[oai(header = "Set-Cookie")] String),
}

/// The start of an OIDC sign-in.
#[derive(ApiResponse)]
pub enum OAuth2StartResponse {
    /// Send the browser to `url`; the cookie binds the attempt to this browser.
    #[oai(status = 200)]
    Ok(Json<OAuth2SignInResponse>, #[oai(header = "Set-Cookie")] String),
}

/// The end of an OIDC sign-in.
#[derive(ApiResponse)]
pub enum OAuth2CallbackResponse {
    /// Signed in: the session cookie is set and the browser goes to the sign-in's callback URL.
    #[oai(status = 302)]
    Found(#[oai(header = "Location")] String, #[oai(header = "Set-Cookie")] String),
}

impl AuthApi {
    fn signed_in(state: &AppState, s: SignedIn) -> SignedInResponse {
        let token = s.token.expose_secret().to_owned();
        let cookie = state.cookies.set_cookie(&token);
        SignedInResponse::Ok(Json(AuthResponse { token, user: s.user.into() }), cookie)
    }
}

#[OpenApi(prefix_path = "/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account with email and password, and sign in.
    ///
    /// The first account of an empty installation, and any email in `CAKE_ADMIN_EMAILS`, is an
    /// admin. Errors: `invalid_input` (400), `internal_email` (403) for the platform's reserved
    /// domains, `email_taken` (409), `rate_limited` (429), `not_found` (404) when email +
    /// password is disabled (`CAKE_EMAIL_AND_PASSWORD_ENABLED=false`).
    #[oai(path = "/sign-up/email", method = "post", operation_id = "sign_up_email")]
    async fn sign_up_email(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<SignUpBody>,
    ) -> ApiResult<SignedInResponse> {
        let b = body.0;
        let client = client_ip(req, &state.trusted_proxies);
        let s = state.auth.sign_up(&b.email.0, SecretString::from(b.password.0), &b.name.0, client).await?;
        Ok(Self::signed_in(&state, s))
    }

    /// Sign in with email and password.
    ///
    /// Failed attempts are limited per account and all attempts per client address.
    /// Errors: `invalid_credentials` (401), `rate_limited` (429, with `Retry-After`),
    /// `not_found` (404) when email + password is disabled
    /// (`CAKE_EMAIL_AND_PASSWORD_ENABLED=false`).
    #[oai(path = "/sign-in/email", method = "post", operation_id = "sign_in_email")]
    async fn sign_in_email(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<SignInBody>,
    ) -> ApiResult<SignedInResponse> {
        let b = body.0;
        let client = client_ip(req, &state.trusted_proxies);
        let s = state.auth.sign_in(&b.email.0, SecretString::from(b.password.0), client).await?;
        Ok(Self::signed_in(&state, s))
    }

    /// Start signing in with the OpenID Connect provider.
    ///
    /// Answers the provider's authorization URL (authorization code flow with PKCE, `state`
    /// and `nonce`) for the browser to visit, and sets a short-lived cookie binding the attempt
    /// to this browser. `callbackURL` (a path on this site, default `/`) is where the browser
    /// lands when signed in. Errors: `unknown_provider` (403) for another `providerId`,
    /// `invalid_input` (400), `not_found` (404) when OIDC is off (`CAKE_OIDC_ENABLED`),
    /// `unavailable` (503) when the provider cannot be reached.
    #[oai(path = "/sign-in/oauth2", method = "post", operation_id = "sign_in_oauth2")]
    async fn sign_in_oauth2(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<OAuth2SignInBody>,
    ) -> ApiResult<OAuth2StartResponse> {
        if state.auth.oidc_provider_id().is_none() {
            return Err(oidc_off());
        }
        let b = body.0;
        let callback = b.callback_url.map(|c| c.0).unwrap_or_default();
        let client = client_ip(req, &state.trusted_proxies);
        let start = state.auth.start_oidc(&b.provider_id.0, &callback, client).await?;
        let cookie = state.cookies.state_cookie(start.state.expose_secret());
        Ok(OAuth2StartResponse::Ok(Json(OAuth2SignInResponse { url: start.url, redirect: true }), cookie))
    }

    /// The OpenID provider's redirect back (register
    /// `<CAKE_PUBLIC_URL>/api/auth/oauth2/callback/<providerId>` with the provider).
    ///
    /// Checks that `state` belongs to this browser's sign-in (cookie) and was issued by this
    /// server, exchanges the code, validates the ID token (issuer keys, audience, expiry,
    /// nonce), upserts the user by verified email and sets the session cookie. Errors:
    /// `invalid_state` (403), `oidc_refused` (403) (the provider's error, a bad token, an
    /// unverified email), `internal_email` (403), `not_found` (404) when OIDC is off.
    #[oai(path = "/oauth2/callback/:provider_id", method = "get", operation_id = "oauth2_callback")]
    #[allow(clippy::too_many_arguments)] // one per query parameter of the OAuth 2.0 redirect
    async fn oauth2_callback(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        provider_id: Path<String>,
        code: Query<Option<String>>,
        #[oai(name = "state")] login_state: Query<Option<String>>,
        error: Query<Option<String>>,
        error_description: Query<Option<String>>,
    ) -> ApiResult<OAuth2CallbackResponse> {
        if state.auth.oidc_provider_id().is_none() {
            return Err(oidc_off());
        }
        let refused = |code: &str, message: String| ApiError::Forbidden(body(code, message));
        let Some(login_state) = login_state.0.filter(|s| !s.is_empty() && s.len() <= 512) else {
            return Err(refused("invalid_state", "the callback has no state".into()));
        };
        let bound = match cookie_values(req, state.cookies.state_cookie_name()).as_slice() {
            [raw] => state.cookies.verify(raw),
            _ => None,
        };
        if !bound.is_some_and(|b| constant_time_eq(b.as_bytes(), login_state.as_bytes())) {
            return Err(refused("invalid_state", "this sign-in was not started by this browser".into()));
        }
        if let Some(err) = error.0 {
            let detail = error_description.0.unwrap_or_default();
            return Err(refused("oidc_refused", format!("the provider answered {err}: {detail}")));
        }
        let Some(code) = code.0.filter(|c| !c.is_empty() && c.len() <= 4096) else {
            return Err(refused("oidc_refused", "the callback has no code".into()));
        };
        let (signed_in, callback_url) = state.auth.finish_oidc(&provider_id.0, &login_state, &code).await?;
        let cookie = state.cookies.set_cookie(signed_in.token.expose_secret());
        Ok(OAuth2CallbackResponse::Found(callback_url, cookie))
    }

    /// Sign out: revoke the browser session and clear its cookie.
    #[oai(path = "/sign-out", method = "post", operation_id = "sign_out")]
    async fn sign_out(&self, state: Data<&Arc<AppState>>, identity: Data<&Identity>) -> ApiResult<SignedOutResponse> {
        if let Some(token) = &identity.cookie_token {
            state.auth.sign_out(token).await?;
        }
        Ok(SignedOutResponse::Ok(Json(SuccessBody { success: true }), state.cookies.clear_cookie()))
    }

    /// The current browser session and its user, or `null`.
    #[oai(path = "/get-session", method = "get", operation_id = "get_session")]
    async fn get_session(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
    ) -> ApiResult<Json<Option<SessionAndUser>>> {
        let Some(token) = &identity.cookie_token else { return Ok(Json(None)) };
        let found = state.auth.session_for_token(token).await?;
        Ok(Json(found.map(|(session, user)| SessionAndUser {
            session: AuthSessionDto {
                id: session.id,
                user_id: session.user_id.0,
                expires_at: rfc3339(session.expires_at),
            },
            user: user.into(),
        })))
    }
}

fn oidc_off() -> ApiError {
    ApiError::NotFound(body("not_found", "OpenID Connect sign-in is disabled"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
