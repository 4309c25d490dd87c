use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use futures::future::{AbortHandle, Abortable};
use futures::stream::BoxStream;
use serde_json::Value;

use crate::error::Resource;
use crate::events::{FrameData, event_type, opencode_session_of};
use crate::policy::{self, Action};
use crate::ports::{
    DataPlane, Endpoint, EventHub, IdGenerator, NewSession, RuntimeEvent, RuntimeSpec, SessionRepository,
    SessionRuntime, SessionUpdate, Spawner, Subscription, TokenGenerator, UpstreamEvent,
};
use crate::session::{
    Activity, Cursor, Limit, ListFilter, Page, PermissionId, PermissionReply, PromptText, Session, SessionId, Status,
    Title, Visibility,
};
use crate::user::Actor;
use crate::{CoreError, Result};

use super::{CredentialService, ProviderService};

/// Everything [`SessionService`] talks to.
#[derive(Clone)]
pub struct SessionDeps {
    /// Durable session state.
    pub sessions: Arc<dyn SessionRepository>,
    /// Model providers, for each session's OpenCode config.
    pub providers: ProviderService,
    /// Linked credentials: grants at creation, the broker token at start.
    pub credentials: CredentialService,
    /// Where data planes run.
    pub runtime: Arc<dyn SessionRuntime>,
    /// How to talk to a data plane.
    pub data_plane: Arc<dyn DataPlane>,
    /// Fan-out of frames to observers.
    pub hub: Arc<dyn EventHub>,
    /// Per-session passwords.
    pub tokens: Arc<dyn TokenGenerator>,
    /// Session ids.
    pub ids: Arc<dyn IdGenerator>,
    /// Background work.
    pub spawner: Arc<dyn Spawner>,
}

/// A request to create a session (Cake's body: `{title, private, initialUserPrompt}`).
#[derive(Debug, Clone)]
pub struct CreateSession {
    /// Optional title.
    pub title: Option<String>,
    /// Who can see it.
    pub visibility: Visibility,
    /// A first prompt, sent as soon as OpenCode is ready.
    pub initial_prompt: Option<String>,
    /// Ids of the creator's own linked credentials the session may use (through
    /// `cake git-credential`); empty: none, and the runtime gets no broker token.
    pub credentials: Vec<String>,
}

/// A ready session's connection, cached so requests need no database round trip for it.
#[derive(Clone)]
struct Live {
    endpoint: Endpoint,
    opencode_session: String,
}

/// A running relay of one session's upstream events (see [`SessionService::pump`]).
struct Relay {
    /// Tells this relay from a later one of the same session.
    generation: u64,
    handle: AbortHandle,
}

struct Inner {
    deps: SessionDeps,
    live: Mutex<HashMap<SessionId, Live>>,
    pumps: Mutex<HashMap<SessionId, Relay>>,
    generations: AtomicU64,
}

/// The session use cases of DESIGN.md: create, list, get, update, delete, prompt, abort,
/// reply to a permission, observe; plus the background work that provisions runtimes, relays
/// their events and reacts to their failures.
///
/// Every method that acts for a user asks [`policy::decide`] before it touches a port.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a status frame still lets `actor` see the session; other frames change nothing.
fn still_visible(actor: Option<&Actor>, frame: &crate::events::Frame) -> bool {
    match &frame.data {
        FrameData::Status(s) => {
            policy::decide(actor, s.owner.id, s.visibility, Action::View) == policy::Decision::Allow
        }
        FrameData::OpenCode(_) => true,
    }
}

fn not_ready(session: &Session) -> CoreError {
    let detail = match (session.status, &session.status_reason) {
        (Status::Failed, Some(r)) => format!("the session failed: {r}"),
        (status, _) => format!("the session is {}; wait until it is ready", status.as_str()),
    };
    CoreError::Conflict { code: "session_not_ready", message: detail }
}

impl SessionService {
    /// Wires the service.
    pub fn new(deps: SessionDeps) -> Self {
        Self {
            inner: Arc::new(Inner {
                deps,
                live: Mutex::new(HashMap::new()),
                pumps: Mutex::new(HashMap::new()),
                generations: AtomicU64::new(0),
            }),
        }
    }

    fn deps(&self) -> &SessionDeps {
        &self.inner.deps
    }

    /// Loads a session and checks `action` against the policy.
    async fn authorize(&self, actor: Option<&Actor>, id: SessionId, action: Action) -> Result<Session> {
        policy::signed_in(actor)?;
        let session = self.deps().sessions.get(id).await?.ok_or(CoreError::NotFound(Resource::Session))?;
        policy::decide(actor, session.owner.id, session.visibility, action).into_result()?;
        Ok(session)
    }

    /// Creates a session and starts its runtime in the background; returns at once with status
    /// `provisioning`. Refused with `no_provider` while no model provider is configured, and
    /// with `credential_not_found` when a credential to grant is not the creator's own.
    pub async fn create(&self, actor: Option<&Actor>, req: CreateSession) -> Result<Session> {
        let actor = policy::signed_in(actor)?;
        let title = Title::parse_optional(req.title.as_deref())?;
        let prompt = req.initial_prompt.as_deref().map(|p| PromptText::parse("initialUserPrompt", p)).transpose()?;
        if self.deps().providers.current().await?.is_none() {
            return Err(CoreError::Conflict {
                code: "no_provider",
                message: "no model provider is configured; an admin must add one (PUT /api/admin/providers)".into(),
            });
        }
        let id = SessionId(self.deps().ids.new_id());
        let grants = self.deps().credentials.prepare_grants(actor, id, req.visibility, &req.credentials).await?;
        let session = self
            .deps()
            .sessions
            .create(NewSession {
                id,
                owner: actor.id,
                title,
                visibility: req.visibility,
                pending_prompt: prompt.map(|p| p.as_ref().to_owned()),
                grants: grants.credentials,
                broker_token_digest: grants.token_digest,
            })
            .await?;
        self.publish_status(&session);
        self.spawn_start(session.id);
        Ok(session)
    }

    /// Lists the sessions the actor may see, newest first.
    pub async fn list(
        &self,
        actor: Option<&Actor>,
        filter: ListFilter,
        limit: Limit,
        cursor: Option<Cursor>,
    ) -> Result<Page> {
        let actor = policy::signed_in(actor)?;
        self.deps().sessions.list_visible(actor.id, filter, limit, cursor).await
    }

    /// Gets one session.
    pub async fn get(&self, actor: Option<&Actor>, id: SessionId) -> Result<Session> {
        self.authorize(actor, id, Action::View).await
    }

    /// The credentials the session was granted and that are still linked (owner only: which
    /// of their accounts a session may use is the owner's business).
    pub async fn credentials(
        &self,
        actor: Option<&Actor>,
        id: SessionId,
    ) -> Result<Vec<crate::credential::LinkedCredential>> {
        self.authorize(actor, id, Action::Write).await?;
        self.deps().credentials.granted(id).await
    }

    /// Changes title and/or visibility (owner only).
    pub async fn update(
        &self,
        actor: Option<&Actor>,
        id: SessionId,
        title: Option<String>,
        private: Option<bool>,
    ) -> Result<Session> {
        let session = self.authorize(actor, id, Action::Write).await?;
        let update = SessionUpdate {
            title: title.as_deref().map(Title::parse).transpose()?,
            visibility: private.map(Visibility::from_private),
            ..Default::default()
        };
        if update.title.is_none() && update.visibility.is_none() {
            return Ok(session);
        }
        // Against the current version: activity changes bump it all the time.
        let updated = self.update_from(Some(session), id, |_| Ok(()), update).await?;
        self.publish_status(&updated);
        Ok(updated)
    }

    /// Deletes a session (owner only): the runtime is torn down, then the session is gone.
    pub async fn delete(&self, actor: Option<&Actor>, id: SessionId) -> Result<()> {
        let session = self.authorize(actor, id, Action::Delete).await?;
        self.tear_down(session).await
    }

    /// Tears down every session a user owns (admins only), before the user is removed.
    /// Returns how many were removed.
    pub async fn remove_all_of(&self, actor: Option<&Actor>, owner: crate::user::UserId) -> Result<usize> {
        policy::can_administer(actor)?;
        let ids = self.deps().sessions.list_owned(owner).await?;
        let mut removed = 0;
        for id in ids {
            match self.deps().sessions.get(id).await? {
                Some(session) => {
                    self.tear_down(session).await?;
                    removed += 1;
                }
                None => continue,
            }
        }
        Ok(removed)
    }

    async fn tear_down(&self, session: Session) -> Result<()> {
        let id = session.id;
        session.status.transition(Status::Deleting)?;
        let deleting = if session.status == Status::Deleting {
            session
        } else {
            let update = SessionUpdate { status: Some(Status::Deleting), ..Default::default() };
            self.update_from(Some(session), id, |s| s.status.transition(Status::Deleting).map(|_| ()), update).await?
        };
        self.publish_status(&deleting);
        self.forget(id);
        let handle = self.deps().sessions.runtime_state(id).await?.and_then(|r| r.handle);
        self.deps().runtime.teardown(id, handle).await?;
        self.deps().sessions.delete(id).await?;
        self.deps().hub.close(id);
        Ok(())
    }

    /// How to reach a ready session's OpenCode; makes sure this replica relays its events.
    async fn live(&self, session: &Session) -> Result<Live> {
        if session.status != Status::Ready {
            return Err(not_ready(session));
        }
        let cached = lock(&self.inner.live).get(&session.id).cloned();
        let live = match cached {
            Some(live) => live,
            None => {
                // Another replica made it ready, or this one restarted: look the runtime up.
                let state = self.deps().sessions.runtime_state(session.id).await?.unwrap_or_default();
                let (Some(handle), Some(oc)) = (state.handle, state.opencode_session_id) else {
                    return Err(not_ready(session));
                };
                let endpoint = self.deps().runtime.endpoint(&handle).await?.ok_or_else(|| not_ready(session))?;
                let live = Live { endpoint, opencode_session: oc };
                lock(&self.inner.live).insert(session.id, live.clone());
                live
            }
        };
        self.ensure_relay(session);
        Ok(live)
    }

    /// Starts relaying a ready session's upstream events on this replica unless it already
    /// does. The session may have been made ready by another replica, or by this one before
    /// it restarted: its observers here get OpenCode's events only from a relay here (the
    /// event hub is per process), and its activity stays current. Runs in the background;
    /// a runtime that cannot be reached now is tried again by the next observer or request.
    fn ensure_relay(&self, session: &Session) {
        if session.status != Status::Ready {
            return;
        }
        let id = session.id;
        let (handle, registration) = AbortHandle::new_pair();
        let generation = {
            let mut pumps = lock(&self.inner.pumps);
            if pumps.contains_key(&id) {
                return;
            }
            let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
            pumps.insert(id, Relay { generation, handle });
            generation
        };
        let this = self.clone();
        let session = session.clone();
        let task = Abortable::new(
            async move {
                // Not reachable now (not ready here yet, a pod still starting): the next
                // observer or request tries again.
                if let Ok(live) = this.live(&session).await {
                    let upstream = this.deps().data_plane.subscribe(live.endpoint.clone());
                    this.pump(id, live, upstream).await;
                }
                this.relay_ended(id, generation);
            },
            registration,
        );
        self.deps().spawner.spawn(Box::pin(async move {
            let _ = task.await;
        }));
    }

    /// Forgets a relay that ended by itself (not a later one of the same session).
    fn relay_ended(&self, id: SessionId, generation: u64) {
        let mut pumps = lock(&self.inner.pumps);
        if pumps.get(&id).is_some_and(|r| r.generation == generation) {
            pumps.remove(&id);
        }
    }

    /// Sends a prompt (owner only); the answer arrives as events.
    pub async fn send_prompt(&self, actor: Option<&Actor>, id: SessionId, text: &str) -> Result<()> {
        let text = PromptText::parse("text", text)?;
        let session = self.authorize(actor, id, Action::Write).await?;
        let live = self.live(&session).await?;
        self.deps().data_plane.prompt(&live.endpoint, &live.opencode_session, text.as_ref()).await
    }

    /// Aborts the running prompt (owner only).
    pub async fn abort(&self, actor: Option<&Actor>, id: SessionId) -> Result<()> {
        let session = self.authorize(actor, id, Action::Write).await?;
        let live = self.live(&session).await?;
        self.deps().data_plane.abort(&live.endpoint, &live.opencode_session).await
    }

    /// Answers an OpenCode permission request (owner only).
    pub async fn reply_permission(
        &self,
        actor: Option<&Actor>,
        id: SessionId,
        permission: &str,
        reply: PermissionReply,
    ) -> Result<()> {
        let permission = PermissionId::parse(permission)?;
        let session = self.authorize(actor, id, Action::Write).await?;
        let live = self.live(&session).await?;
        self.deps().data_plane.reply_permission(&live.endpoint, &permission, reply).await
    }

    /// The transcript, exactly as OpenCode returns it (anyone who may see the session).
    pub async fn messages(&self, actor: Option<&Actor>, id: SessionId) -> Result<Value> {
        let session = self.authorize(actor, id, Action::View).await?;
        let live = self.live(&session).await?;
        self.deps().data_plane.messages(&live.endpoint, &live.opencode_session).await
    }

    /// Subscribes to a session's frames (anyone who may see it), resuming after
    /// `last_event_id` when the buffer still holds it.
    pub async fn observe(
        &self,
        actor: Option<&Actor>,
        id: SessionId,
        last_event_id: Option<u64>,
    ) -> Result<(Session, Subscription)> {
        policy::signed_in(actor)?;
        // Subscribed before the session is read, so no change falls between the snapshot the
        // observer gets first and the live frames; live status frames the snapshot already
        // covers (as old or older) are skipped, so the observer never goes back in time.
        // (A refused caller's subscription is dropped unread.)
        let mut sub = self.deps().hub.subscribe(id, last_event_id);
        let session = self.authorize(actor, id, Action::View).await?;
        self.ensure_relay(&session);
        let actor = actor.copied();
        let seen = session.version;
        // The stream ends for anyone who loses access while watching (made private).
        sub.live = sub
            .live
            .filter(move |f| futures::future::ready(!matches!(&f.data, FrameData::Status(s) if s.version <= seen)))
            .take_while(move |f| futures::future::ready(still_visible(actor.as_ref(), f)))
            .boxed();
        Ok((session, sub))
    }

    /// Resolves when `actor` can no longer see the session (made private, or deleted), so the
    /// relay can end long-lived responses such as OpenCode's own event stream.
    pub fn access_revoked(&self, actor: Option<&Actor>, id: SessionId) -> futures::future::BoxFuture<'static, ()> {
        let actor = actor.copied();
        let live = self.deps().hub.subscribe(id, None).live;
        Box::pin(async move {
            let mut live = live;
            while let Some(frame) = live.next().await {
                if !still_visible(actor.as_ref(), &frame) {
                    return;
                }
            }
        })
    }

    /// The endpoint behind the raw OpenCode pass-through: observers may read, the owner may
    /// also write. The caller (the HTTP relay) filters which OpenCode routes exist at all.
    pub async fn passthrough(&self, actor: Option<&Actor>, id: SessionId, write: bool) -> Result<(Endpoint, String)> {
        let action = if write { Action::Write } else { Action::View };
        let session = self.authorize(actor, id, action).await?;
        let live = self.live(&session).await?;
        Ok((live.endpoint, live.opencode_session))
    }

    /// Shows this process's observers of a session what the database now holds, when it is
    /// newer than the last status frame they got: the session was changed by another
    /// control-plane replica (retitled, made private, failed, deleted) or by this one. Called
    /// for each change the database reports ([`crate::ports`] adapters: PostgreSQL
    /// `LISTEN`/`NOTIFY`). A session nobody here observes costs nothing; one made ready
    /// elsewhere starts being relayed here; one that failed or is being deleted stops; a
    /// deleted one ends its streams.
    pub async fn refresh(&self, id: SessionId) {
        if !self.deps().hub.is_observed(id) {
            return;
        }
        match self.deps().sessions.get(id).await {
            Ok(Some(session)) => {
                if !session.status.is_live() {
                    self.forget(id);
                }
                // Only if newer than what observers here saw (the hub checks).
                self.publish_status(&session);
                // Made ready by another replica: its OpenCode events reach observers here too.
                self.ensure_relay(&session);
            }
            Ok(None) => {
                self.forget(id);
                self.deps().hub.close(id);
            }
            // The next change, or the next resynchronisation, tries again.
            Err(_) => {}
        }
    }

    /// [`Self::refresh`] for every session observed here: after changes may have been missed
    /// (the change feed reconnected).
    pub async fn refresh_observed(&self) {
        for id in self.deps().hub.observed() {
            self.refresh(id).await;
        }
    }

    /// Whether a request from `ip` comes from a session's data plane
    /// ([`SessionRuntime::is_data_plane_address`]).
    pub fn is_data_plane_address(&self, ip: std::net::IpAddr) -> bool {
        self.deps().runtime.is_data_plane_address(ip)
    }

    /// Whether the runtime backend answers (for `/readyz`).
    pub async fn runtime_health(&self) -> Result<()> {
        self.deps().runtime.health().await
    }

    /// Publishes a status frame, unless observers here already got this version or a newer
    /// one (from [`Self::refresh`]): a late frame must not show them an older state.
    fn publish_status(&self, session: &Session) {
        self.deps().hub.publish_status(Box::new(session.clone()));
    }

    fn forget(&self, id: SessionId) {
        lock(&self.inner.live).remove(&id);
        if let Some(relay) = lock(&self.inner.pumps).remove(&id) {
            relay.handle.abort();
        }
    }

    fn spawn_start(&self, id: SessionId) {
        let this = self.clone();
        self.deps().spawner.spawn(Box::pin(async move { this.start(id).await }));
    }

    /// Applies `update` to the current version of a session, re-reading on a concurrent
    /// change (a few times). `check` sees the fresh session and may refuse.
    async fn update_current(
        &self,
        id: SessionId,
        check: impl Fn(&Session) -> Result<()>,
        update: SessionUpdate,
    ) -> Result<Session> {
        self.update_from(None, id, check, update).await
    }

    /// [`Self::update_current`], trying a session the caller just read first (saving a read
    /// when nothing changed in between).
    async fn update_from(
        &self,
        mut known: Option<Session>,
        id: SessionId,
        check: impl Fn(&Session) -> Result<()>,
        update: SessionUpdate,
    ) -> Result<Session> {
        let mut attempts = 0;
        loop {
            let current = match known.take() {
                Some(s) => s,
                None => self.deps().sessions.get(id).await?.ok_or(CoreError::NotFound(Resource::Session))?,
            };
            check(&current)?;
            match self.deps().sessions.update(id, current.version, update.clone()).await {
                Err(CoreError::Conflict { code: "concurrent_update", .. }) if attempts < 5 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn set_status(&self, id: SessionId, to: Status, update: SessionUpdate) -> Result<Session> {
        self.set_status_from(None, id, to, update).await
    }

    async fn set_status_from(
        &self,
        known: Option<Session>,
        id: SessionId,
        to: Status,
        mut update: SessionUpdate,
    ) -> Result<Session> {
        update.status = Some(to);
        let session = self.update_from(known, id, |s| s.status.transition(to).map(|_| ()), update).await?;
        self.publish_status(&session);
        Ok(session)
    }

    /// Provisions the runtime of a session in status `provisioning`, waits for OpenCode, and
    /// delivers the pending first prompt. Any failure marks the session `failed` with a reason;
    /// a session deleted meanwhile has its new runtime torn down.
    pub async fn start(&self, id: SessionId) {
        if let Err(e) = self.try_start(id).await {
            let current = self.deps().sessions.get(id).await;
            let gone = match &current {
                Ok(Some(s)) => s.status == Status::Deleting,
                Ok(None) => true,
                Err(_) => false,
            };
            // Another replica brought the session up meanwhile (it took over a start it
            // presumed abandoned): this start lost the race and changes nothing.
            let overtaken = matches!(e, CoreError::Conflict { code: "invalid_state", .. })
                && matches!(&current, Ok(Some(s)) if s.status == Status::Ready);
            if gone {
                self.forget(id);
                let _ = self.deps().runtime.teardown(id, None).await;
            } else if overtaken {
                // Nothing to undo: its relay and runtime are the other replica's.
            } else {
                self.mark_failed(id, &format!("could not start the session's runtime: {}", describe(&e))).await;
            }
        }
    }

    async fn try_start(&self, id: SessionId) -> Result<()> {
        let session = self.deps().sessions.get(id).await?.ok_or(CoreError::NotFound(Resource::Session))?;
        let state = self.deps().sessions.runtime_state(id).await?.unwrap_or_default();
        let settings = self
            .deps()
            .providers
            .current()
            .await?
            .ok_or_else(|| CoreError::Unavailable("no model provider is configured".into()))?;
        let (opencode_config, env) = settings.opencode_config();
        let spec = RuntimeSpec {
            session_id: id,
            opencode_config,
            env,
            password: self.deps().tokens.generate(),
            broker_token: self.deps().credentials.token_for(id).await?,
            previous: state.handle.clone(),
        };
        let handle = self.deps().runtime.provision(spec).await?;
        let title = session.title.clone();
        self.set_status_from(
            Some(session),
            id,
            Status::Starting,
            SessionUpdate {
                runtime_handle: Some(Some(handle.clone())),
                status_reason: Some(None),
                ..Default::default()
            },
        )
        .await?;
        let endpoint = self.deps().runtime.wait_ready(&handle).await?;
        // Subscribe before the OpenCode session exists, so its very first events reach observers.
        let mut upstream = self.deps().data_plane.subscribe(endpoint.clone());
        match upstream.next().await {
            Some(UpstreamEvent::Connected) => {}
            Some(UpstreamEvent::Gone(reason)) => return Err(CoreError::Unavailable(reason)),
            _ => return Err(CoreError::Unavailable("OpenCode's event stream closed at once".into())),
        }
        let opencode_session = match state.opencode_session_id {
            Some(oc) => oc,
            None => self.deps().data_plane.create_session(&endpoint, &title).await?,
        };
        let live = Live { endpoint, opencode_session: opencode_session.clone() };
        let activity =
            self.deps().data_plane.activity(&live.endpoint, &opencode_session).await.unwrap_or(Activity::Idle);
        // Ready first: if the session was deleted meanwhile this fails, and no relay is left
        // behind. Events arriving until the pump runs wait in the subscription's buffer.
        self.set_status(
            id,
            Status::Ready,
            SessionUpdate {
                opencode_session_id: Some(Some(opencode_session.clone())),
                activity: Some(activity),
                // The last progress note ("starting OpenCode") no longer applies.
                status_reason: Some(None),
                ..Default::default()
            },
        )
        .await?;
        self.spawn_pump(id, live.clone(), upstream);
        lock(&self.inner.live).insert(id, live.clone());
        if let Some(prompt) = state.pending_prompt {
            self.deps().data_plane.prompt(&live.endpoint, &opencode_session, &prompt).await?;
            self.update_current(id, |_| Ok(()), SessionUpdate { pending_prompt: Some(None), ..Default::default() })
                .await?;
        }
        Ok(())
    }

    fn spawn_pump(&self, id: SessionId, live: Live, upstream: BoxStream<'static, UpstreamEvent>) {
        let (handle, registration) = AbortHandle::new_pair();
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = lock(&self.inner.pumps).insert(id, Relay { generation, handle }) {
            old.handle.abort();
        }
        let this = self.clone();
        let task = Abortable::new(
            async move {
                this.pump(id, live, upstream).await;
                this.relay_ended(id, generation);
            },
            registration,
        );
        self.deps().spawner.spawn(Box::pin(async move {
            let _ = task.await;
        }));
    }

    /// Relays one session's upstream events to its observers: only events of its own OpenCode
    /// session pass, and `session.status` events update the session's activity.
    async fn pump(&self, id: SessionId, live: Live, mut upstream: BoxStream<'static, UpstreamEvent>) {
        while let Some(item) = upstream.next().await {
            match item {
                UpstreamEvent::Connected => {
                    // Resynchronise: events may have been missed while disconnected.
                    if let Ok(activity) = self.deps().data_plane.activity(&live.endpoint, &live.opencode_session).await
                    {
                        self.set_activity(id, activity).await;
                    }
                }
                UpstreamEvent::Event(event) => {
                    if opencode_session_of(&event) != Some(live.opencode_session.as_str()) {
                        continue;
                    }
                    let activity = match event_type(&event) {
                        Some("session.status") => event
                            .pointer("/properties/status/type")
                            .and_then(Value::as_str)
                            .and_then(|t| Activity::parse(t).ok()),
                        Some("session.idle") => Some(Activity::Idle),
                        _ => None,
                    };
                    self.deps().hub.publish(id, FrameData::OpenCode(Arc::new(event)));
                    if let Some(activity) = activity {
                        self.set_activity(id, activity).await;
                    }
                }
                UpstreamEvent::Gone(reason) => {
                    // On its own task: marking failed aborts this pump, which would cancel it.
                    let this = self.clone();
                    let reason = format!("lost the connection to OpenCode: {reason}");
                    self.deps().spawner.spawn(Box::pin(async move { this.mark_failed(id, &reason).await }));
                    return;
                }
            }
        }
    }

    async fn set_activity(&self, id: SessionId, activity: Activity) {
        let result = self
            .update_current(
                id,
                |s| {
                    if s.status == Status::Ready && s.activity != activity {
                        Ok(())
                    } else {
                        Err(CoreError::Conflict { code: "unchanged", message: String::new() })
                    }
                },
                SessionUpdate { activity: Some(activity), ..Default::default() },
            )
            .await;
        if let Ok(session) = result {
            self.publish_status(&session);
        }
    }

    /// Marks a live session `failed` with a reason a person understands, and stops relaying.
    pub async fn mark_failed(&self, id: SessionId, reason: &str) {
        self.forget(id);
        let update = SessionUpdate {
            status_reason: Some(Some(reason.to_owned())),
            activity: Some(Activity::Idle),
            ..Default::default()
        };
        let failed = self
            .update_current(
                id,
                |s| {
                    if s.status.is_live() {
                        Ok(())
                    } else {
                        Err(CoreError::Conflict { code: "unchanged", message: String::new() })
                    }
                },
                SessionUpdate { status: Some(Status::Failed), ..update },
            )
            .await;
        if let Ok(session) = failed {
            self.publish_status(&session);
            // A hung runtime must not keep running behind a failed session; its data stays.
            // Best effort: a runtime that cannot be stopped reports that itself. In the
            // background: a slow runtime backend must not hold up the next runtime event.
            let runtime = self.deps().runtime.clone();
            self.deps().spawner.spawn(Box::pin(async move {
                let _ = runtime.stop(id).await;
            }));
        }
    }

    /// Turns runtime failures into failed sessions, and runtime progress into the reason shown
    /// while a session starts; runs for the life of the control plane.
    pub async fn watch_runtime(&self) {
        let mut events = self.deps().runtime.events();
        while let Some(event) = events.next().await {
            match event {
                RuntimeEvent::Failed { session_id, reason } => self.mark_failed(session_id, &reason).await,
                RuntimeEvent::Progress { session_id, detail } => self.record_progress(session_id, detail).await,
                RuntimeEvent::Stalled { session_id } => self.take_over(session_id).await,
            }
        }
    }

    /// Shows a runtime's progress as the `statusReason` of a session that is still on its way
    /// to ready; a session in any other status (or already showing it) is left alone.
    async fn record_progress(&self, id: SessionId, detail: String) {
        let wanted = Some(detail.clone());
        let result = self
            .update_current(
                id,
                |s| {
                    let starting = matches!(s.status, Status::Provisioning | Status::Starting);
                    if starting && s.status_reason != wanted {
                        Ok(())
                    } else {
                        Err(CoreError::Conflict { code: "unchanged", message: String::new() })
                    }
                },
                SessionUpdate { status_reason: Some(Some(detail)), ..Default::default() },
            )
            .await;
        if let Ok(session) = result {
            self.publish_status(&session);
        }
    }

    /// Takes over a session whose driving replica is gone ([`RuntimeEvent::Stalled`]): one
    /// on its way to ready is started again (its runtime is reused when it still runs), one
    /// being deleted is deleted. The claim is a versioned update, so of two replicas only one
    /// starts it, and it moves `updatedAt`, so it is not reported again for a while.
    async fn take_over(&self, id: SessionId) {
        let Ok(Some(session)) = self.deps().sessions.get(id).await else { return };
        match session.status {
            Status::Deleting => {
                // A failure is tried again on the next report (the session stays `deleting`).
                let _ = self.tear_down(session).await;
            }
            Status::Provisioning | Status::Starting => {
                let update = SessionUpdate {
                    status: Some(Status::Provisioning),
                    status_reason: Some(Some(
                        "the control plane replica that was starting the session went away; starting it again".into(),
                    )),
                    ..Default::default()
                };
                let claimed = self
                    .update_from(
                        Some(session),
                        id,
                        |s| match s.status {
                            Status::Provisioning | Status::Starting => Ok(()),
                            _ => Err(CoreError::Conflict { code: "unchanged", message: String::new() }),
                        },
                        update,
                    )
                    .await;
                if let Ok(session) = claimed {
                    self.publish_status(&session);
                    self.spawn_start(id);
                }
            }
            _ => {}
        }
    }

    /// Brings sessions back after the control plane starts; half-deleted ones are finished.
    ///
    /// With a runtime whose sessions end with the process ([`SessionRuntime::survives_restart`]
    /// false: the local one), live sessions are provisioned again on their previous runtime
    /// (work dir and OpenCode history intact). With one whose sessions outlive it
    /// (Kubernetes), nothing is restarted — another replica may be serving or starting them
    /// right now: ready sessions are adopted as they are (this replica relays their events),
    /// and sessions on their way are left to their replica, or taken over by the elected one
    /// if it is gone ([`RuntimeEvent::Stalled`]). Returns how many sessions were resumed or
    /// adopted.
    pub async fn recover(&self) -> Result<usize> {
        let survives = self.deps().runtime.survives_restart();
        let mut resumed = 0;
        for id in self.deps().sessions.list_unsettled().await? {
            let Some(session) = self.deps().sessions.get(id).await? else { continue };
            if session.status == Status::Deleting {
                if let Err(e) = self.tear_down(session).await {
                    self.mark_failed(id, &format!("could not finish deleting: {}", describe(&e))).await;
                }
                continue;
            }
            if survives {
                if session.status == Status::Ready {
                    self.ensure_relay(&session);
                    resumed += 1;
                }
                continue;
            }
            if session.status != Status::Provisioning {
                let update = SessionUpdate {
                    status_reason: Some(Some("the control plane restarted; bringing the runtime back".into())),
                    ..Default::default()
                };
                if self.set_status(id, Status::Provisioning, update).await.is_err() {
                    continue;
                }
            }
            self.spawn_start(id);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Stops relaying for every session (the runtime's own shutdown stops the processes).
    pub fn shutdown(&self) {
        for (_, relay) in lock(&self.inner.pumps).drain() {
            relay.handle.abort();
        }
        lock(&self.inner.live).clear();
    }
}

fn describe(e: &CoreError) -> String {
    match e {
        CoreError::Internal(source) => source.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
