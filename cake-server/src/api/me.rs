//! The signed-in user and their API tokens.

use poem::web::Data;
use poem_openapi::{ApiResponse, OpenApi, param::Path, payload::Json};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::ApiTags;
use super::dto::{CreateTokenBody, CreatedToken, PutUserSettingsBody, TokenDto, UserDto, UserSettingsDto, rfc3339};
use crate::error::ApiResult;
use crate::identity::Identity;
use std::sync::Arc;

use crate::state::AppState;

/// `/api/me` routes.
pub struct MeApi;

/// A created token.
#[derive(ApiResponse)]
pub enum TokenCreated {
    /// Created; `token` is shown this once.
    #[oai(status = 201)]
    Created(Json<CreatedToken>),
}

/// An empty success.
#[derive(ApiResponse)]
pub enum NoContent {
    /// Done.
    #[oai(status = 204)]
    Done,
}

#[OpenApi(prefix_path = "/me", tag = "ApiTags::Me")]
impl MeApi {
    /// The signed-in user.
    ///
    /// Errors: `unauthenticated` (401).
    #[oai(path = "/", method = "get", operation_id = "get_me")]
    async fn get_me(&self, state: Data<&Arc<AppState>>, identity: Data<&Identity>) -> ApiResult<Json<UserDto>> {
        Ok(Json(state.auth.me(identity.actor().as_ref()).await?.into()))
    }

    /// Create an API token for OpenAPI-generated clients; the value is shown once.
    ///
    /// Errors: `unauthenticated` (401), `invalid_input` (400).
    #[oai(path = "/tokens", method = "post", operation_id = "create_token")]
    async fn create_token(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        body: Json<CreateTokenBody>,
    ) -> ApiResult<TokenCreated> {
        let (t, secret) = state.auth.create_api_token(identity.actor().as_ref(), &body.name.0).await?;
        Ok(TokenCreated::Created(Json(CreatedToken {
            id: t.id,
            name: t.name,
            token: secret.expose_secret().to_owned(),
            created_at: rfc3339(t.created_at),
        })))
    }

    /// The signed-in user's API tokens (never their values).
    ///
    /// Errors: `unauthenticated` (401).
    #[oai(path = "/tokens", method = "get", operation_id = "list_tokens")]
    async fn list_tokens(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
    ) -> ApiResult<Json<Vec<TokenDto>>> {
        let tokens = state.auth.list_api_tokens(identity.actor().as_ref()).await?;
        Ok(Json(tokens.into_iter().map(Into::into).collect()))
    }

    /// Revoke an API token; it stops working at once.
    ///
    /// Errors: `unauthenticated` (401), `token_not_found` (404).
    #[oai(path = "/tokens/:id", method = "delete", operation_id = "delete_token")]
    async fn delete_token(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        state.auth.delete_api_token(identity.actor().as_ref(), id.0).await?;
        Ok(NoContent::Done)
    }

    /// Your settings: the visibility new sessions start with, per surface.
    ///
    /// Errors: `unauthenticated` (401).
    #[oai(path = "/settings", method = "get", operation_id = "get_my_settings")]
    async fn get_settings(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
    ) -> ApiResult<Json<UserSettingsDto>> {
        Ok(Json(state.settings.mine(identity.actor().as_ref()).await?.into()))
    }

    /// Replace your settings; `null` (or a surface left out) inherits the organisation's default.
    ///
    /// Errors: `unauthenticated` (401), `invalid_request` (400).
    #[oai(path = "/settings", method = "put", operation_id = "put_my_settings")]
    async fn put_settings(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        body: Json<PutUserSettingsBody>,
    ) -> ApiResult<Json<UserSettingsDto>> {
        let prefs = body.0.default_visibility.into();
        Ok(Json(state.settings.set_mine(identity.actor().as_ref(), prefs).await?.into()))
    }
}
