//! Unit tests of the session use cases with mocked ports: what must happen, and what must not
//! (`times(0)`), for each rule.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use mockall::predicate::eq;
use secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;
use crate::ports::{
    MockAuditLog, MockCredentialStore, MockDataPlane, MockEventHub, MockIdGenerator, MockProviderRepository,
    MockSecretCipher, MockSessionRepository, MockSessionRuntime, MockTokenDeriver, MockTokenGenerator, Spawner,
};
use crate::session::{OwnerSummary, RuntimeState};
use crate::user::{Role, UserId};

const OWNER: UserId = UserId(Uuid::from_u128(1));
const OTHER: UserId = UserId(Uuid::from_u128(2));
const SID: SessionId = SessionId(Uuid::from_u128(42));

fn actor(id: UserId) -> Actor {
    Actor { id, role: Role::Member }
}

fn session(status: Status, visibility: Visibility) -> Session {
    Session {
        id: SID,
        title: "t".into(),
        visibility,
        owner: OwnerSummary { id: OWNER, name: "o".into(), email: "o@example.com".into() },
        status,
        activity: Activity::Idle,
        status_reason: None,
        version: 1,
        created_at: OffsetDateTime::UNIX_EPOCH,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

/// Collects spawned tasks so a test can run them when it chooses.
#[derive(Default, Clone)]
struct Collect(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

impl Spawner for Collect {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.0.lock().unwrap().push(task);
    }
}

impl Collect {
    fn take(&self) -> Vec<BoxFuture<'static, ()>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Mocks {
    repo: MockSessionRepository,
    providers: MockProviderRepository,
    runtime: MockSessionRuntime,
    data_plane: MockDataPlane,
    hub: MockEventHub,
    credentials: MockCredentialStore,
}

impl Mocks {
    fn new(provider_configured: bool) -> Self {
        let mut providers = MockProviderRepository::new();
        providers.expect_load().returning(move || {
            Ok(provider_configured.then(|| {
                serde_json::to_vec(&json!({
                    "providers": {"p": {"options": {"apiKey": "k"}}}, "defaultModel": "p/m"
                }))
                .unwrap()
            }))
        });
        let mut hub = MockEventHub::new();
        hub.expect_publish().returning(|_, _| 1);
        hub.expect_close().returning(|_| ());
        hub.expect_publish_status().returning(|_| Some(1));
        Self {
            repo: MockSessionRepository::new(),
            providers,
            runtime: MockSessionRuntime::new(),
            data_plane: MockDataPlane::new(),
            hub,
            credentials: {
                let mut store = MockCredentialStore::new();
                store.expect_renew_broker_token().returning(|_, _| Ok(false));
                store
            },
        }
    }

    fn build(self, spawner: Collect) -> SessionService {
        let mut cipher = MockSecretCipher::new();
        cipher.expect_decrypt().returning(|c| Ok(c.to_vec()));
        cipher.expect_encrypt().returning(|c| Ok(c.to_vec()));
        let mut tokens = MockTokenGenerator::new();
        tokens.expect_generate().returning(|| SecretString::from("pw".to_owned()));
        tokens.expect_digest().returning(|t| format!("digest:{t}").into_bytes());
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(|| SID.0);
        let cipher = Arc::new(cipher);
        let tokens = Arc::new(tokens);
        let ids = Arc::new(ids);
        let credentials = CredentialService::new(crate::services::CredentialDeps {
            store: Arc::new(self.credentials),
            audit: Arc::new(MockAuditLog::new()),
            cipher: cipher.clone(),
            tokens: tokens.clone(),
            deriver: Arc::new({
                let mut d = MockTokenDeriver::new();
                d.expect_derive().returning(|_, _| SecretString::from("derived".to_owned()));
                d
            }),
            ids: ids.clone(),
            clock: Arc::new(crate::ports::MockClock::new()),
        });
        SessionService::new(SessionDeps {
            sessions: Arc::new(self.repo),
            providers: ProviderService::new(Arc::new(self.providers), cipher),
            credentials,
            runtime: Arc::new(self.runtime),
            data_plane: Arc::new(self.data_plane),
            hub: Arc::new(self.hub),
            tokens,
            ids,
            spawner: Arc::new(spawner),
        })
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

#[test]
fn create_without_provider_is_refused_and_creates_nothing() {
    let mut m = Mocks::new(false);
    m.repo.expect_create().times(0);
    m.runtime.expect_provision().times(0);
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    let req = CreateSession { title: None, visibility: Visibility::Private, initial_prompt: None, credentials: vec![] };
    let err = run(svc.create(Some(&actor(OWNER)), req)).unwrap_err();
    assert!(matches!(err, CoreError::Conflict { code: "no_provider", .. }));
    assert!(spawner.take().is_empty());
}

#[test]
fn anonymous_cannot_create() {
    let mut m = Mocks::new(true);
    m.repo.expect_create().times(0);
    let svc = m.build(Collect::default());
    let req = CreateSession { title: None, visibility: Visibility::Public, initial_prompt: None, credentials: vec![] };
    assert!(matches!(run(svc.create(None, req)), Err(CoreError::Unauthenticated)));
}

#[test]
fn create_stores_the_first_prompt_and_starts_in_the_background() {
    let mut m = Mocks::new(true);
    m.repo
        .expect_create()
        .withf(|n| n.owner == OWNER && n.pending_prompt.as_deref() == Some("hello") && n.visibility.is_private())
        .times(1)
        .returning(|_| Ok(session(Status::Provisioning, Visibility::Private)));
    // Provisioning happens in the spawned task, not during the request.
    m.runtime.expect_provision().times(0);
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    let req = CreateSession {
        title: Some("t".into()),
        visibility: Visibility::Private,
        initial_prompt: Some("hello".into()),
        credentials: vec![],
    };
    let s = run(svc.create(Some(&actor(OWNER)), req)).unwrap();
    assert_eq!(s.status, Status::Provisioning);
    assert_eq!(spawner.take().len(), 1);
}

fn github_credential(id: crate::credential::CredentialId, owner: UserId) -> crate::credential::LinkedCredential {
    crate::credential::LinkedCredential {
        id,
        owner,
        kind: crate::credential::CredentialKind::GitHub,
        hosts: crate::credential::CredentialKind::GitHub.default_hosts(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

#[test]
fn a_session_cannot_be_granted_someone_elses_credential() {
    let mut m = Mocks::new(true);
    let theirs = Uuid::from_u128(77);
    m.credentials.expect_get().returning(|id| Ok(Some(github_credential(id, OTHER))));
    m.repo.expect_create().times(0);
    m.runtime.expect_provision().times(0);
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    let req = CreateSession {
        title: None,
        visibility: Visibility::Private,
        initial_prompt: None,
        credentials: vec![theirs.to_string()],
    };
    let err = run(svc.create(Some(&actor(OWNER)), req)).unwrap_err();
    assert!(matches!(err, CoreError::NotFound(crate::error::Resource::Credential)), "{err:?}");
    assert!(spawner.take().is_empty());
}

#[test]
fn own_credentials_are_stored_with_the_session_and_a_broker_token_digest() {
    let mut m = Mocks::new(true);
    let mine = Uuid::from_u128(78);
    m.credentials.expect_get().returning(|id| Ok(Some(github_credential(id, OWNER))));
    m.repo
        .expect_create()
        .withf(move |n| {
            n.grants == vec![crate::credential::CredentialId(mine)]
                && n.broker_token_digest.as_deref() == Some(b"digest:cakeb_derived".as_slice())
        })
        .times(1)
        .returning(|_| Ok(session(Status::Provisioning, Visibility::Private)));
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    let req = CreateSession {
        title: None,
        visibility: Visibility::Private,
        initial_prompt: None,
        // The same credential twice is granted once.
        credentials: vec![mine.to_string(), mine.to_string()],
    };
    run(svc.create(Some(&actor(OWNER)), req)).unwrap();
    assert_eq!(spawner.take().len(), 1);
}

#[test]
fn others_private_session_is_hidden() {
    let mut m = Mocks::new(true);
    m.repo.expect_get().returning(|_| Ok(Some(session(Status::Ready, Visibility::Private))));
    m.data_plane.expect_messages().times(0);
    let svc = m.build(Collect::default());
    assert!(matches!(run(svc.get(Some(&actor(OTHER)), SID)), Err(CoreError::NotFound(_))));
    assert!(matches!(run(svc.messages(Some(&actor(OTHER)), SID)), Err(CoreError::NotFound(_))));
}

#[test]
fn a_denied_delete_never_reaches_the_runtime() {
    let mut m = Mocks::new(true);
    m.repo.expect_get().returning(|_| Ok(Some(session(Status::Ready, Visibility::Public))));
    m.repo.expect_update().times(0);
    m.repo.expect_delete().times(0);
    m.runtime.expect_teardown().times(0);
    let svc = m.build(Collect::default());
    assert!(matches!(run(svc.delete(Some(&actor(OTHER)), SID)), Err(CoreError::Forbidden(_))));
}

#[test]
fn observers_cannot_prompt_and_the_data_plane_is_not_called() {
    let mut m = Mocks::new(true);
    m.repo.expect_get().returning(|_| Ok(Some(session(Status::Ready, Visibility::Public))));
    m.data_plane.expect_prompt().times(0);
    m.data_plane.expect_abort().times(0);
    let svc = m.build(Collect::default());
    assert!(matches!(run(svc.send_prompt(Some(&actor(OTHER)), SID, "hi")), Err(CoreError::Forbidden(_))));
    assert!(matches!(run(svc.abort(Some(&actor(OTHER)), SID)), Err(CoreError::Forbidden(_))));
}

#[test]
fn prompts_to_a_session_that_is_not_ready_are_refused() {
    let mut m = Mocks::new(true);
    m.repo.expect_get().returning(|_| Ok(Some(session(Status::Starting, Visibility::Private))));
    m.data_plane.expect_prompt().times(0);
    let svc = m.build(Collect::default());
    let err = run(svc.send_prompt(Some(&actor(OWNER)), SID, "hi")).unwrap_err();
    assert!(matches!(err, CoreError::Conflict { code: "session_not_ready", .. }));
}

#[test]
fn owner_deletes_tearing_the_runtime_down_first() {
    let mut m = Mocks::new(true);
    let mut seq = mockall::Sequence::new();
    m.repo.expect_get().returning(|_| Ok(Some(session(Status::Ready, Visibility::Private))));
    m.repo
        .expect_update()
        .withf(|_, v, u| *v == 1 && u.status == Some(Status::Deleting))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(session(Status::Deleting, Visibility::Private)));
    m.repo
        .expect_runtime_state()
        .returning(|_| Ok(Some(RuntimeState { handle: Some(json!({"h": 1})), ..Default::default() })));
    m.runtime
        .expect_teardown()
        .with(eq(SID), eq(Some(json!({"h": 1}))))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    m.repo.expect_delete().with(eq(SID)).times(1).in_sequence(&mut seq).returning(|_| Ok(()));
    let svc = m.build(Collect::default());
    run(svc.delete(Some(&actor(OWNER)), SID)).unwrap();
}

/// A repository mock backed by one stored session, applying updates like the real one.
fn stateful_repo(m: &mut Mocks, state: RuntimeState) -> Arc<Mutex<Session>> {
    let stored = Arc::new(Mutex::new(session(Status::Provisioning, Visibility::Private)));
    let s = stored.clone();
    m.repo.expect_get().returning(move |_| Ok(Some(s.lock().unwrap().clone())));
    let runtime_state = Arc::new(Mutex::new(state));
    let rs = runtime_state.clone();
    m.repo.expect_runtime_state().returning(move |_| Ok(Some(rs.lock().unwrap().clone())));
    let s = stored.clone();
    m.repo.expect_update().returning(move |_, version, u| {
        let mut cur = s.lock().unwrap();
        assert_eq!(version, cur.version, "updates carry the current version");
        if let Some(st) = u.status {
            cur.status = st;
        }
        if let Some(r) = u.status_reason {
            cur.status_reason = r;
        }
        if let Some(a) = u.activity {
            cur.activity = a;
        }
        if let Some(p) = u.pending_prompt {
            runtime_state.lock().unwrap().pending_prompt = p;
        }
        cur.version += 1;
        Ok(cur.clone())
    });
    stored
}

fn endpoint() -> Endpoint {
    Endpoint {
        base_url: "http://127.0.0.1:1".into(),
        username: "opencode".into(),
        password: SecretString::from("pw".to_owned()),
    }
}

#[test]
fn start_brings_the_session_to_ready_and_delivers_the_first_prompt_once() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, RuntimeState { pending_prompt: Some("hello".into()), ..Default::default() });
    m.runtime
        .expect_provision()
        .withf(|spec| spec.opencode_config.contains("{env:CAKE_PROVIDER_0_API_KEY}") && spec.env.len() == 1)
        .times(1)
        .returning(|_| Ok(json!({"h": 1})));
    m.runtime.expect_wait_ready().times(1).returning(|_| Ok(endpoint()));
    m.data_plane.expect_subscribe().times(1).returning(|_| futures::stream::iter([UpstreamEvent::Connected]).boxed());
    m.data_plane.expect_create_session().times(1).returning(|_, _| Ok("ses_1".into()));
    m.data_plane.expect_activity().returning(|_, _| Ok(Activity::Idle));
    m.data_plane
        .expect_prompt()
        .with(mockall::predicate::always(), eq("ses_1"), eq("hello"))
        .times(1)
        .returning(|_, _, _| Ok(()));
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    run(svc.start(SID));
    let s = stored.lock().unwrap().clone();
    assert_eq!(s.status, Status::Ready);
    // The event pump was started in the background.
    assert_eq!(spawner.take().len(), 1);
}

#[test]
fn a_runtime_that_never_gets_ready_fails_the_session_with_its_reason() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, RuntimeState::default());
    m.runtime.expect_provision().returning(|_| Ok(json!({"h": 1})));
    m.runtime
        .expect_wait_ready()
        .returning(|_| Err(CoreError::Unavailable("OpenCode exited unexpectedly with status 1".into())));
    m.data_plane.expect_create_session().times(0);
    m.data_plane.expect_prompt().times(0);
    m.runtime.expect_stop().with(eq(SID)).times(1).returning(|_| Ok(()));
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    run(svc.start(SID));
    let s = stored.lock().unwrap().clone();
    assert_eq!(s.status, Status::Failed);
    assert!(s.status_reason.unwrap().contains("status 1"));
    // The runtime is stopped in the background.
    for t in spawner.take() {
        run(t);
    }
}

#[test]
fn runtime_failures_mark_live_sessions_failed() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, RuntimeState::default());
    stored.lock().unwrap().status = Status::Ready;
    m.runtime.expect_events().returning(|| {
        futures::stream::iter([RuntimeEvent::Failed { session_id: SID, reason: "killed by signal 9".into() }]).boxed()
    });
    m.runtime.expect_stop().times(1).returning(|_| Ok(()));
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    run(svc.watch_runtime());
    let s = stored.lock().unwrap().clone();
    assert_eq!((s.status, s.status_reason.as_deref()), (Status::Failed, Some("killed by signal 9")));
    // Stopping runs on its own task: a slow runtime backend does not hold up the next event.
    assert_eq!(spawner.take().into_iter().map(run).count(), 1);
}

#[test]
fn runtime_progress_shows_as_the_reason_while_starting_only() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, RuntimeState::default());
    stored.lock().unwrap().status = Status::Starting;
    m.runtime.expect_events().returning(|| {
        futures::stream::iter([
            RuntimeEvent::Progress { session_id: SID, detail: "pulling image cake/data-plane:1".into() },
            RuntimeEvent::Progress { session_id: SID, detail: "pulling image cake/data-plane:1".into() },
        ])
        .boxed()
    });
    m.runtime.expect_stop().times(0);
    let svc = m.build(Collect::default());
    run(svc.watch_runtime());
    let s = stored.lock().unwrap().clone();
    assert_eq!((s.status, s.status_reason.as_deref()), (Status::Starting, Some("pulling image cake/data-plane:1")));
    assert_eq!(s.version, 2, "the repeated note was not written again");

    // A ready session keeps its reason (none): progress no longer applies.
    stored.lock().unwrap().status = Status::Ready;
    stored.lock().unwrap().status_reason = None;
    run(svc.watch_runtime());
    let s = stored.lock().unwrap().clone();
    assert_eq!((s.status, s.status_reason), (Status::Ready, None));
}

fn ready_state() -> RuntimeState {
    RuntimeState { handle: Some(json!({"h": 1})), opencode_session_id: Some("ses_1".into()), ..Default::default() }
}

#[test]
fn a_control_plane_starting_beside_surviving_runtimes_restarts_nothing_and_relays_ready_sessions() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, ready_state());
    stored.lock().unwrap().status = Status::Ready;
    m.repo.expect_list_unsettled().returning(|| Ok(vec![SID]));
    m.runtime.expect_survives_restart().return_const(true);
    // Nothing is provisioned again and the status is not touched: another replica may be
    // serving the session right now.
    m.runtime.expect_provision().times(0);
    m.runtime.expect_stop().times(0);
    m.runtime.expect_endpoint().times(1).returning(|_| Ok(Some(endpoint())));
    m.data_plane.expect_subscribe().times(1).returning(|_| futures::stream::iter([UpstreamEvent::Connected]).boxed());
    m.data_plane.expect_activity().returning(|_, _| Ok(Activity::Idle));
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    assert_eq!(run(svc.recover()).unwrap(), 1);
    let tasks = spawner.take();
    assert_eq!(tasks.len(), 1, "one relay of the ready session's events");
    for t in tasks {
        run(t);
    }
    let s = stored.lock().unwrap().clone();
    assert_eq!((s.status, s.version), (Status::Ready, 1), "no update at all");
}

#[test]
fn a_control_plane_starting_beside_surviving_runtimes_leaves_starting_sessions_to_their_replica() {
    for status in [Status::Provisioning, Status::Starting] {
        let mut m = Mocks::new(true);
        let stored = stateful_repo(&mut m, RuntimeState { handle: Some(json!({"h": 1})), ..Default::default() });
        stored.lock().unwrap().status = status;
        m.repo.expect_list_unsettled().returning(|| Ok(vec![SID]));
        m.runtime.expect_survives_restart().return_const(true);
        m.runtime.expect_provision().times(0);
        let spawner = Collect::default();
        let svc = m.build(spawner.clone());
        assert_eq!(run(svc.recover()).unwrap(), 0);
        assert!(spawner.take().is_empty(), "no second start of a {status:?} session");
        assert_eq!(stored.lock().unwrap().version, 1);
    }
}

#[test]
fn a_control_plane_restarting_with_a_local_runtime_brings_live_sessions_back() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, ready_state());
    stored.lock().unwrap().status = Status::Ready;
    m.repo.expect_list_unsettled().returning(|| Ok(vec![SID]));
    m.runtime.expect_survives_restart().return_const(false);
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    assert_eq!(run(svc.recover()).unwrap(), 1);
    let s = stored.lock().unwrap().clone();
    assert_eq!(s.status, Status::Provisioning, "its process died with the control plane: provisioned again");
    assert_eq!(spawner.take().len(), 1, "a start");
}

#[test]
fn a_stalled_session_is_started_again_and_a_ready_one_left_alone() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, RuntimeState { handle: Some(json!({"h": 1})), ..Default::default() });
    stored.lock().unwrap().status = Status::Starting;
    m.runtime.expect_events().returning(|| futures::stream::iter([RuntimeEvent::Stalled { session_id: SID }]).boxed());
    m.runtime.expect_provision().times(0);
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    run(svc.watch_runtime());
    let s = stored.lock().unwrap().clone();
    assert_eq!(s.status, Status::Provisioning);
    assert!(s.status_reason.unwrap().contains("went away; starting it again"));
    assert_eq!(spawner.take().len(), 1, "the start runs in the background");

    // A report about a session that got ready meanwhile changes nothing.
    stored.lock().unwrap().status = Status::Ready;
    let version = stored.lock().unwrap().version;
    run(svc.watch_runtime());
    assert_eq!(stored.lock().unwrap().version, version);
    assert!(spawner.take().is_empty());
}

#[test]
fn an_observer_on_a_replica_that_did_not_start_the_session_gets_its_events_relayed_once() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, ready_state());
    stored.lock().unwrap().status = Status::Ready;
    m.hub.expect_subscribe().returning(|_, _| Subscription {
        backlog: Vec::new(),
        last_id: 0,
        live: futures::stream::empty().boxed(),
    });
    m.runtime.expect_endpoint().times(1).returning(|_| Ok(Some(endpoint())));
    let event = json!({"type": "message.part.delta", "properties": {"sessionID": "ses_1", "delta": "hi"}});
    let upstream = [UpstreamEvent::Connected, UpstreamEvent::Event(event)];
    m.data_plane.expect_subscribe().times(1).returning(move |_| futures::stream::iter(upstream.clone()).boxed());
    m.data_plane.expect_activity().returning(|_, _| Ok(Activity::Idle));
    let spawner = Collect::default();
    let svc = m.build(spawner.clone());
    let owner = actor(OWNER);
    run(svc.observe(Some(&owner), SID, None)).unwrap();
    run(svc.observe(Some(&owner), SID, None)).unwrap();
    let tasks = spawner.take();
    assert_eq!(tasks.len(), 1, "two observers, one relay");
    for t in tasks {
        run(t);
    }
}

#[test]
fn a_start_overtaken_by_another_replica_fails_nothing() {
    let mut m = Mocks::new(true);
    let stored = stateful_repo(&mut m, RuntimeState::default());
    m.runtime.expect_provision().returning(|_| Ok(json!({"h": 1})));
    let other_replica = stored.clone();
    m.runtime.expect_wait_ready().returning(move |_| {
        // Meanwhile the replica that took the start over made the session ready.
        let mut s = other_replica.lock().unwrap();
        s.status = Status::Ready;
        s.version += 1;
        Ok(endpoint())
    });
    m.data_plane.expect_subscribe().returning(|_| futures::stream::iter([UpstreamEvent::Connected]).boxed());
    m.data_plane.expect_create_session().returning(|_, _| Ok("ses_2".into()));
    m.data_plane.expect_activity().returning(|_, _| Ok(Activity::Idle));
    m.runtime.expect_stop().times(0);
    let svc = m.build(Collect::default());
    run(svc.start(SID));
    let s = stored.lock().unwrap().clone();
    assert_eq!((s.status, s.status_reason), (Status::Ready, None));
}

#[test]
fn changes_from_elsewhere_reach_observers_here() {
    // Nobody observes the session here: the change costs no read.
    let mut m = Mocks::new(true);
    m.hub.expect_is_observed().returning(|_| false);
    m.repo.expect_get().times(0);
    run(m.build(Collect::default()).refresh(SID));

    // Observed: the stored state goes to the hub, which publishes it only if it is newer than
    // what observers here saw (BroadcastHub's own tests).
    let mut hub = MockEventHub::new();
    hub.expect_is_observed().returning(|_| true);
    hub.expect_publish_status().withf(|s| s.version == 4 && s.title == "retitled").times(1).returning(|_| Some(1));
    let mut m = Mocks::new(true);
    m.hub = hub;
    m.repo.expect_get().returning(|_| {
        let mut s = session(Status::Provisioning, Visibility::Public);
        s.version = 4;
        s.title = "retitled".into();
        Ok(Some(s))
    });
    run(m.build(Collect::default()).refresh(SID));

    // Deleted elsewhere: the streams here end.
    let mut m = Mocks::new(true);
    m.repo.expect_get().returning(|_| Ok(None));
    let mut hub = MockEventHub::new();
    hub.expect_is_observed().returning(|_| true);
    hub.expect_close().with(eq(SID)).times(1).returning(|_| ());
    hub.expect_publish_status().times(0);
    m.hub = hub;
    run(m.build(Collect::default()).refresh(SID));
}

#[test]
fn an_observer_never_sees_a_state_older_than_its_snapshot() {
    use crate::events::Frame;
    let mut m = Mocks::new(true);
    m.repo.expect_get().returning(|_| {
        let mut s = session(Status::Provisioning, Visibility::Public);
        s.version = 5;
        Ok(Some(s))
    });
    // Published between the subscription and the read: v4 and v5 are already in the snapshot.
    m.hub.expect_subscribe().returning(|_, _| {
        let status = |v: i64| {
            let mut s = session(Status::Provisioning, Visibility::Public);
            s.version = v;
            Frame { id: v as u64, data: FrameData::Status(Box::new(s)) }
        };
        let event = Frame { id: 7, data: FrameData::OpenCode(Arc::new(json!({"type": "x"}))) };
        Subscription {
            backlog: Vec::new(),
            last_id: 0,
            live: futures::stream::iter([status(4), status(5), event, status(6)]).boxed(),
        }
    });
    let svc = m.build(Collect::default());
    let (snapshot, sub) = run(svc.observe(Some(&actor(OTHER)), SID, None)).unwrap();
    assert_eq!(snapshot.version, 5);
    let ids: Vec<u64> = run(sub.live.map(|f| f.id).collect());
    assert_eq!(ids, [7, 6], "only what is newer than the snapshot, in order");
}
