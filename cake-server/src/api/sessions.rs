//! Sessions: create, list, get, update, delete, messages, prompts, abort, permission replies
//! and the live event stream. Every rule about who may do what lives in `cake-core`'s policy;
//! these handlers only translate HTTP to service calls.

use std::time::Duration;

use cake_core::events::{Frame, FrameData};
use cake_core::services::CreateSession;
use cake_core::session::{Cursor, Limit, ListFilter, PermissionReply, SessionId, Visibility};
use futures::StreamExt;
use futures::stream::BoxStream;
use poem::web::Data;
use poem::web::sse::Event;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::dto::{
    CreateSessionBody, EventFrame, MessageBody, PatchSessionBody, PermissionBody, ReplyDto, SessionDto, SessionPage,
    VisibilityFilter,
};
use super::fast_json::FastJson;
use super::me::NoContent;
use crate::error::ApiResult;
use crate::identity::Identity;
use std::sync::Arc;

use crate::state::AppState;

/// `/api/sessions` routes.
pub struct SessionsApi;

/// A created session.
#[derive(ApiResponse)]
pub enum SessionCreated {
    /// Created with status `provisioning`; the runtime starts in the background.
    #[oai(status = 201)]
    Created(Json<SessionDto>),
}

/// An accepted prompt.
#[derive(ApiResponse)]
pub enum Accepted {
    /// Sent to OpenCode; the answer arrives on the event stream.
    #[oai(status = 202)]
    Accepted,
}

/// Keep-alive comments on event streams.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn frame_to_dto(f: Frame) -> EventFrame {
    match f.data {
        FrameData::Status(s) => EventFrame {
            id: f.id,
            event: "status".into(),
            data: serde_json::to_value(poem_openapi::types::ToJSON::to_json(&SessionDto::from(s.as_ref())))
                .unwrap_or_default(),
        },
        FrameData::OpenCode(v) => EventFrame { id: f.id, event: "opencode".into(), data: (*v).clone() },
    }
}

#[OpenApi(prefix_path = "/sessions", tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// Create a session; its runtime starts in the background.
    ///
    /// Returns at once with status `provisioning`; `initialUserPrompt` is sent to the agent as
    /// soon as it is ready. Errors: `unauthenticated` (401), `invalid_input`/`invalid_request`
    /// (400), `no_provider` (409) while no model provider is configured, `credential_not_found`
    /// (404) for a credential id that is not one of yours.
    #[oai(path = "/", method = "post", operation_id = "create_session")]
    async fn create_session(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        body: Json<CreateSessionBody>,
    ) -> ApiResult<SessionCreated> {
        let b = body.0;
        let req = CreateSession {
            title: b.title.map(String::from),
            visibility: Visibility::from_private(b.private),
            initial_prompt: b.initial_user_prompt.map(String::from),
            credentials: b.credentials.unwrap_or_default().into_iter().map(String::from).collect(),
        };
        let s = state.sessions.create(identity.actor().as_ref(), req).await?;
        Ok(SessionCreated::Created(Json((&s).into())))
    }

    /// List sessions you may see, newest first.
    ///
    /// `visibility=all` (default): your own plus everyone's public sessions; `public`: public
    /// sessions of anyone; `private`: your own private ones. Others' private sessions never
    /// appear. Errors: `unauthenticated` (401), `invalid_input` (400) for a bad cursor or limit.
    #[oai(path = "/", method = "get", operation_id = "list_sessions")]
    async fn list_sessions(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        visibility: Query<Option<VisibilityFilter>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// `nextCursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<FastJson<SessionPage>> {
        let filter = match visibility.0.unwrap_or_default() {
            VisibilityFilter::All => ListFilter::All,
            VisibilityFilter::Public => ListFilter::Public,
            VisibilityFilter::Private => ListFilter::Private,
        };
        let limit = limit.0.map(Limit::parse).transpose()?.unwrap_or(Limit::DEFAULT);
        let cursor = cursor.0.as_deref().map(Cursor::decode).transpose()?;
        let page = state.sessions.list(identity.actor().as_ref(), filter, limit, cursor).await?;
        Ok(FastJson(SessionPage {
            items: page.items.iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }))
    }

    /// Get a session.
    ///
    /// Errors: `unauthenticated` (401), `session_not_found` (404, also for someone else's
    /// private session).
    #[oai(path = "/:id", method = "get", operation_id = "get_session_by_id")]
    async fn get_session(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<Json<SessionDto>> {
        let s = state.sessions.get(identity.actor().as_ref(), SessionId(id.0)).await?;
        Ok(Json((&s).into()))
    }

    /// The credentials granted to a session and still linked (owner only).
    ///
    /// Errors: `unauthenticated` (401), `not_owner` (403) on someone else's public session,
    /// `session_not_found` (404).
    #[oai(path = "/:id/credentials", method = "get", operation_id = "list_session_credentials")]
    async fn list_session_credentials(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Vec<super::dto::CredentialDto>>> {
        let list = state.sessions.credentials(identity.actor().as_ref(), SessionId(id.0)).await?;
        Ok(Json(list.into_iter().map(Into::into).collect()))
    }

    /// Change a session's title and/or visibility (owner only).
    ///
    /// Errors: 401, 404 `session_not_found`, 403 `not_owner`, 400 `invalid_input`,
    /// 409 `concurrent_update`.
    #[oai(path = "/:id", method = "patch", operation_id = "update_session")]
    async fn update_session(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
        body: Json<PatchSessionBody>,
    ) -> ApiResult<Json<SessionDto>> {
        let b = body.0;
        let s = state
            .sessions
            .update(identity.actor().as_ref(), SessionId(id.0), b.title.map(String::from), b.private)
            .await?;
        Ok(Json((&s).into()))
    }

    /// Delete a session (owner only): its runtime is torn down, then it is gone.
    ///
    /// Errors: 401, 404 `session_not_found`, 403 `not_owner`.
    #[oai(path = "/:id", method = "delete", operation_id = "delete_session")]
    async fn delete_session(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        state.sessions.delete(identity.actor().as_ref(), SessionId(id.0)).await?;
        Ok(NoContent::Done)
    }

    /// The transcript: `[{info, parts}]` exactly as OpenCode returns it.
    ///
    /// Errors: 401, 404 `session_not_found`, 409 `session_not_ready`, 503 `unavailable`.
    #[oai(path = "/:id/messages", method = "get", operation_id = "list_messages")]
    async fn list_messages(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<Json<serde_json::Value>> {
        Ok(Json(state.sessions.messages(identity.actor().as_ref(), SessionId(id.0)).await?))
    }

    /// Send a prompt to the agent (owner only); the answer streams on the event stream.
    ///
    /// Errors: 401, 404 `session_not_found`, 403 `not_owner`, 400 `invalid_input`,
    /// 409 `session_not_ready`, 503 `unavailable`.
    #[oai(path = "/:id/messages", method = "post", operation_id = "send_message")]
    async fn send_message(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
        body: Json<MessageBody>,
    ) -> ApiResult<Accepted> {
        state.sessions.send_prompt(identity.actor().as_ref(), SessionId(id.0), &body.text.0).await?;
        Ok(Accepted::Accepted)
    }

    /// Abort the running prompt (owner only).
    ///
    /// Errors: 401, 404 `session_not_found`, 403 `not_owner`, 409 `session_not_ready`.
    #[oai(path = "/:id/abort", method = "post", operation_id = "abort_session")]
    async fn abort_session(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        state.sessions.abort(identity.actor().as_ref(), SessionId(id.0)).await?;
        Ok(NoContent::Done)
    }

    /// Answer a permission request of the agent (owner only).
    ///
    /// `permissionId` comes from an `opencode` event of type `permission.asked`. Errors: 401,
    /// 404 `session_not_found`, 403 `not_owner`, 400 `invalid_input`, 409 `session_not_ready`.
    #[oai(path = "/:id/permissions/:permissionId", method = "post", operation_id = "reply_permission")]
    async fn reply_permission(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
        #[oai(name = "permissionId")] permission_id: Path<String>,
        body: Json<PermissionBody>,
    ) -> ApiResult<NoContent> {
        let reply = match body.reply {
            ReplyDto::Once => PermissionReply::Once,
            ReplyDto::Always => PermissionReply::Always,
            ReplyDto::Reject => PermissionReply::Reject,
        };
        state.sessions.reply_permission(identity.actor().as_ref(), SessionId(id.0), &permission_id.0, reply).await?;
        Ok(NoContent::Done)
    }

    /// Observe a session live (Server-Sent Events).
    ///
    /// Frames: `event: status` with the Session whenever status or activity changes (and once
    /// at connect); `event: opencode` with one OpenCode event of this session. Every frame has
    /// an `id:`; reconnect with `Last-Event-ID` to resume from a bounded buffer. Keep-alive
    /// comments every 15 s. Errors: 401, 404 `session_not_found`.
    #[oai(path = "/:id/events", method = "get", operation_id = "stream_session_events")]
    async fn stream_events(
        &self,
        state: Data<&Arc<AppState>>,
        identity: Data<&Identity>,
        id: Path<Uuid>,
        /// The last frame id seen, to resume after it.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
    ) -> ApiResult<EventStream<BoxStream<'static, EventFrame>>> {
        let last = last_event_id.0.as_deref().and_then(|v| v.trim().parse::<u64>().ok());
        let (session, sub) = state.sessions.observe(identity.actor().as_ref(), SessionId(id.0), last).await?;
        let first = Frame { id: sub.last_id, data: FrameData::Status(Box::new(session)) };
        let metrics = state.metrics.clone();
        metrics.observers.inc();
        let guard = ObserverGuard(metrics);
        // The replayed backlog (oldest first), then a snapshot of the session as of the newest
        // frame, then live frames.
        let stream = futures::stream::iter(sub.backlog.into_iter().chain(std::iter::once(first)))
            .chain(sub.live)
            .map(move |f| {
                let _ = &guard;
                frame_to_dto(f)
            })
            .boxed();
        Ok(EventStream::new(stream)
            .keep_alive(KEEP_ALIVE)
            .to_event(|f| Event::message(f.data.to_string()).event_type(f.event).id(f.id.to_string())))
    }
}

struct ObserverGuard(std::sync::Arc<crate::metrics::Metrics>);

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        self.0.observers.dec();
    }
}
