//! Sign-up, sign-in, sign-out and get-session, in Better Auth's shapes.

use cake_core::services::SignedIn;
use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, payload::Json};
use secrecy::{ExposeSecret, SecretString};

use super::ApiTags;
use super::dto::{AuthResponse, AuthSessionDto, SessionAndUser, SignInBody, SignUpBody, SuccessBody, rfc3339};
use crate::error::ApiResult;
use crate::identity::Identity;
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
    /// admin. Errors: `invalid_input` (400), `email_taken` (409), `not_found` (404) when
    /// email + password is disabled.
    #[oai(path = "/sign-up/email", method = "post", operation_id = "sign_up_email")]
    async fn sign_up_email(&self, state: Data<&Arc<AppState>>, body: Json<SignUpBody>) -> ApiResult<SignedInResponse> {
        let b = body.0;
        let s = state.auth.sign_up(&b.email.0, SecretString::from(b.password.0), &b.name.0).await?;
        Ok(Self::signed_in(&state, s))
    }

    /// Sign in with email and password.
    ///
    /// Errors: `invalid_credentials` (401), `not_found` (404) when email + password is disabled.
    #[oai(path = "/sign-in/email", method = "post", operation_id = "sign_in_email")]
    async fn sign_in_email(&self, state: Data<&Arc<AppState>>, body: Json<SignInBody>) -> ApiResult<SignedInResponse> {
        let b = body.0;
        let s = state.auth.sign_in(&b.email.0, SecretString::from(b.password.0)).await?;
        Ok(Self::signed_in(&state, s))
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
