//! Installation settings (model providers) and users (admins only).

use cake_core::provider::ProviderSettings;
use cake_core::user::UserId;
use poem::web::Data;
use poem_openapi::{OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::ApiTags;
use super::dto::{OrgSettingsDto, ProvidersDto, UserDto};
use super::me::NoContent;
use crate::error::{ApiError, ApiResult};
use crate::identity::Identity;
use std::sync::Arc;

use crate::state::AppState;

/// `/api/admin` routes.
pub struct AdminApi;

fn to_dto(s: ProviderSettings) -> ProvidersDto {
    ProvidersDto {
        providers: s.providers.into_iter().collect(),
        default_model: super::strict::Str(s.default_model.to_string()),
        permission: s.permission,
    }
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl AdminApi {
    /// The model providers, every secret shown as `%%SECRET%%`.
    ///
    /// Errors: `unauthenticated` (401), `not_admin` (403), `not_found` (404) when none is configured.
    #[oai(path = "/providers", method = "get", operation_id = "get_providers")]
    async fn get_providers(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
    ) -> ApiResult<Json<ProvidersDto>> {
        match state.providers.get(identity.actor().as_ref()).await? {
            Some(s) => Ok(Json(to_dto(s))),
            None => Err(ApiError::NotFound(crate::error::body("no_provider", "no model provider is configured yet"))),
        }
    }

    /// Replace the model providers (OpenCode's provider format).
    ///
    /// Secrets (`options.apiKey`, every `options.headers` value) are stored encrypted; sending
    /// `%%SECRET%%` keeps the stored value. Errors: `unauthenticated` (401), `not_admin` (403),
    /// `invalid_input` (400).
    #[oai(path = "/providers", method = "put", operation_id = "put_providers")]
    async fn put_providers(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        body: Json<ProvidersDto>,
    ) -> ApiResult<Json<ProvidersDto>> {
        let b = body.0;
        let saved = state
            .providers
            .put(identity.actor().as_ref(), b.providers.into_iter().collect(), &b.default_model.0, b.permission)
            .await?;
        Ok(Json(to_dto(saved)))
    }

    /// Every user, by email (at most 1,000).
    ///
    /// Errors: `unauthenticated` (401), `not_admin` (403).
    #[oai(path = "/users", method = "get", operation_id = "list_users")]
    async fn list_users(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
    ) -> ApiResult<Json<Vec<UserDto>>> {
        let users = state.auth.list_users(identity.actor().as_ref()).await?;
        Ok(Json(users.into_iter().map(UserDto::from).collect()))
    }

    /// Remove a user: their sessions are torn down (runtimes stopped, data removed), then the
    /// user, their browser sessions and API tokens are deleted — they are signed out at once.
    ///
    /// Errors: `unauthenticated` (401), `not_admin` (403), `user_not_found` (404),
    /// `cannot_remove_self` (409).
    #[oai(path = "/users/:id", method = "delete", operation_id = "delete_user")]
    async fn delete_user(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        let actor = identity.actor();
        let user = UserId(id.0);
        state.auth.check_removable(actor.as_ref(), user).await?;
        state.sessions.remove_all_of(actor.as_ref(), user).await?;
        state.auth.remove_user(actor.as_ref(), user).await?;
        Ok(NoContent::Done)
    }

    /// The organisation's settings: the default visibility of new sessions per surface.
    ///
    /// Errors: `unauthenticated` (401), `not_admin` (403).
    #[oai(path = "/settings", method = "get", operation_id = "get_org_settings")]
    async fn get_settings(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
    ) -> ApiResult<Json<OrgSettingsDto>> {
        let defaults = state.settings.organisation(identity.actor().as_ref()).await?;
        Ok(Json(OrgSettingsDto { default_visibility: defaults.into() }))
    }

    /// Replace the organisation's settings (every surface must be given).
    ///
    /// Errors: `unauthenticated` (401), `not_admin` (403), `invalid_request` (400).
    #[oai(path = "/settings", method = "put", operation_id = "put_org_settings")]
    async fn put_settings(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        body: Json<OrgSettingsDto>,
    ) -> ApiResult<Json<OrgSettingsDto>> {
        let defaults =
            state.settings.set_organisation(identity.actor().as_ref(), body.0.default_visibility.into()).await?;
        Ok(Json(OrgSettingsDto { default_visibility: defaults.into() }))
    }
}
