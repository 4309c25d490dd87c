//! Credential brokering over HTTP: users link credentials (`/api/me/credentials`), session
//! runtimes ask for them (`/api/broker/git-credential`, called by `cake git-credential`), and
//! admins read the audit log (`/api/admin/audit`).

use std::sync::Arc;

use cake_core::CoreError;
use cake_core::credential::{CredentialId, CredentialKind, GitCredentialRequest};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, OpenApi, payload::Json};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::ApiTags;
use super::dto::{AuditPage, CredentialDto, GitCredentialDto, GitCredentialQuery, LinkGitHubBody};
use super::me::NoContent;
use crate::error::{ApiError, ApiResult};
use crate::identity::Identity;
use crate::state::AppState;

/// Credential routes.
pub struct CredentialsApi;

/// The broker's answer.
#[derive(ApiResponse)]
pub enum GitCredentialAnswer {
    /// The credential for that host.
    #[oai(status = 200)]
    Found(Json<GitCredentialDto>),
}

/// The broker token of `Authorization: Bearer cakeb_…`.
fn broker_token(req: &poem::Request) -> Option<&str> {
    let value = req.headers().get(poem::http::header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

#[OpenApi(tag = "ApiTags::Credentials")]
impl CredentialsApi {
    /// Your linked credentials (never their secrets).
    ///
    /// Errors: `unauthenticated` (401).
    #[oai(path = "/me/credentials", method = "get", operation_id = "list_credentials")]
    async fn list_credentials(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
    ) -> ApiResult<Json<Vec<CredentialDto>>> {
        let list = state.credentials.list(identity.actor().as_ref()).await?;
        Ok(Json(list.into_iter().map(Into::into).collect()))
    }

    /// Link a GitHub token to your account, or replace the one linked before.
    ///
    /// Stored encrypted; never returned. Sessions you create may then be granted it
    /// (`credentials` in `POST /api/sessions`); sessions already granted it use the new
    /// token from their next git operation. Errors: `unauthenticated` (401), `invalid_input` (400).
    #[oai(path = "/me/credentials/github", method = "put", operation_id = "link_github_credential")]
    async fn link_github(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        body: Json<LinkGitHubBody>,
    ) -> ApiResult<Json<CredentialDto>> {
        let body = body.0;
        let hosts: Option<Vec<String>> = body.hosts.map(|h| h.into_iter().map(String::from).collect());
        let linked = state
            .credentials
            .link(identity.actor().as_ref(), CredentialKind::GitHub, SecretString::from(body.token.0), hosts.as_deref())
            .await?;
        Ok(Json(linked.into()))
    }

    /// Unlink one of your credentials; sessions granted it lose it at once.
    ///
    /// Errors: `unauthenticated` (401), `credential_not_found` (404).
    #[oai(path = "/me/credentials/:id", method = "delete", operation_id = "delete_credential")]
    async fn delete_credential(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        state.credentials.unlink(identity.actor().as_ref(), CredentialId(id.0)).await?;
        Ok(NoContent::Done)
    }

    /// For `cake git-credential` in a session's runtime: the granted credential for a host.
    ///
    /// Authenticated by the session's broker token (`Authorization: Bearer cakeb_…`, given to
    /// the runtime as `CAKE_BROKER_TOKEN`), not by a user. Answers only over `https`, only for
    /// hosts of credentials the owner granted the session, only while it lives. Every call is
    /// audited. Errors: `unauthenticated` (401) for an unknown token or an ended session,
    /// `no_credential` (404) when no granted credential serves the host.
    #[oai(path = "/broker/git-credential", method = "post", operation_id = "broker_git_credential")]
    async fn git_credential(
        &self,
        state: Data<&Arc<AppState>>,
        req: &poem::Request,
        body: Json<GitCredentialQuery>,
    ) -> ApiResult<GitCredentialAnswer> {
        let token = broker_token(req).ok_or(ApiError::from(CoreError::Unauthenticated))?;
        let query = GitCredentialRequest {
            protocol: body.0.protocol.0,
            host: body.0.host.0,
            path: body.0.path.map(String::from),
        };
        if query.protocol.len() > 32 || query.host.len() > 300 || query.path.as_ref().is_some_and(|p| p.len() > 4096) {
            return Err(CoreError::invalid("host", "protocol, host or path is too long").into());
        }
        match state.credentials.fill(token, &query).await? {
            Some(c) => Ok(GitCredentialAnswer::Found(Json(GitCredentialDto {
                username: c.username,
                password: c.password.expose_secret().to_owned(),
            }))),
            None => Err(ApiError::NotFound(crate::error::body(
                "no_credential",
                "no credential granted to this session serves this host",
            ))),
        }
    }

    /// The audit log: credentials linked, unlinked and granted, and every broker call
    /// (admins only), newest first.
    ///
    /// Errors: `unauthenticated` (401), `not_admin` (403), `invalid_input` (400).
    #[oai(path = "/admin/audit", method = "get", operation_id = "list_audit")]
    async fn list_audit(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        /// 1 to 200 (default 50).
        limit: Query<Option<u32>>,
        /// The `nextCursor` of the previous page.
        before: Query<Option<String>>,
    ) -> ApiResult<Json<AuditPage>> {
        let limit = limit.0.unwrap_or(50);
        let before = match before.0.as_deref() {
            None => None,
            Some(raw) => Some(
                raw.parse::<i64>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| CoreError::invalid("before", "is not a cursor from this list"))?,
            ),
        };
        let items = state.credentials.audit(identity.actor().as_ref(), limit, before).await?;
        let next_cursor = (items.len() == limit as usize).then(|| items.last().map(|e| e.id.to_string())).flatten();
        Ok(Json(AuditPage { items: items.into_iter().map(Into::into).collect(), next_cursor }))
    }
}
