//! The Kubernetes runtime against a fake API server: the exact requests it sends (apply
//! bodies, field manager, force, creates, deletes), how pod statuses become progress,
//! readiness and failures with reasons (at once, or after the pending grace), `410 Gone`
//! relists (and the race with a provision during one), retries on 409/500 and on answers
//! that never come, two replicas provisioning one session, what `stop` keeps, events reported
//! before anyone listens, and the Lease-holding reconciler (renewal, takeover on its own
//! clock, a pass that outlives its lease, sessions whose replica is gone).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cake_adapters::kubernetes::resources::{labels, object_name};
use cake_adapters::kubernetes::{KubeRuntime, KubeSettings};
use cake_core::ports::{NewSession, RuntimeEvent, RuntimeSpec, SessionRepository, SessionRuntime, SessionUpdate};
use cake_core::session::{
    Activity, Cursor, Limit, ListFilter, OwnerSummary, Page, RuntimeState, Session, SessionId, Status, Visibility,
};
use cake_core::user::UserId;
use cake_core::{CoreError, Result};
use cake_tests::fake_kube::{FakeKube, ready_status, secret_data};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::{Value, json};
use time::OffsetDateTime;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

const NS: &str = "sessions";
const WAIT: Duration = Duration::from_secs(10);
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/cake-agents-reconciler";
const DELETED: &str = "the data plane pod was deleted from outside Cake";

/// The sessions the reconciler sees (status and last update); nothing else of the
/// repository is used by the runtime.
#[derive(Default, Clone)]
struct Sessions(Arc<Mutex<Vec<(SessionId, Status, OffsetDateTime)>>>);

impl Sessions {
    fn add(&self, status: Status) -> SessionId {
        self.add_updated(status, OffsetDateTime::now_utc())
    }

    fn add_updated(&self, status: Status, updated_at: OffsetDateTime) -> SessionId {
        let id = SessionId(uuid::Uuid::new_v4());
        self.0.lock().unwrap().push((id, status, updated_at));
        id
    }
}

fn unused<T>() -> Result<T> {
    Err(CoreError::Unavailable("not used by the runtime".into()))
}

#[async_trait]
impl SessionRepository for Sessions {
    async fn create(&self, _: NewSession) -> Result<Session> {
        unused()
    }
    async fn get(&self, id: SessionId) -> Result<Option<Session>> {
        let found = self.0.lock().unwrap().iter().find(|(s, _, _)| *s == id).copied();
        Ok(found.map(|(id, status, updated_at)| Session {
            id,
            title: "t".into(),
            visibility: Visibility::Private,
            owner: OwnerSummary { id: UserId(uuid::Uuid::nil()), name: "o".into(), email: "o@example.com".into() },
            status,
            activity: Activity::Idle,
            status_reason: None,
            version: 1,
            created_at: updated_at,
            updated_at,
        }))
    }
    async fn runtime_state(&self, _: SessionId) -> Result<Option<RuntimeState>> {
        unused()
    }
    async fn list_visible(&self, _: UserId, _: ListFilter, _: Limit, _: Option<Cursor>) -> Result<Page> {
        unused()
    }
    async fn update(&self, _: SessionId, _: i64, _: SessionUpdate) -> Result<Session> {
        unused()
    }
    async fn delete(&self, _: SessionId) -> Result<()> {
        unused()
    }
    async fn list_unsettled(&self) -> Result<Vec<SessionId>> {
        unused()
    }
    async fn list_owned(&self, _: UserId) -> Result<Vec<SessionId>> {
        unused()
    }
    async fn list_statuses(&self) -> Result<Vec<(SessionId, Status)>> {
        Ok(self.0.lock().unwrap().iter().map(|(id, status, _)| (*id, *status)).collect())
    }
}

fn settings(fake: &FakeKube, identity: &str) -> KubeSettings {
    let mut s = KubeSettings::for_images("cake/data-plane:1", "cake/data-plane-init:1");
    s.api_url = Some(fake.uri());
    s.namespace = Some(NS.into());
    s.identity = Some(identity.into());
    s.retry_attempts = 3;
    s.retry_delay = Duration::from_millis(10);
    s.ready_timeout = Duration::from_secs(20);
    s.reconcile_interval = Duration::from_secs(3600);
    s.api_timeout = Duration::from_secs(5);
    s
}

/// A Lease held by another replica that keeps it (renewed "in the future"): the runtime under
/// test follows and reconciles nothing, for as long as `resourceVersion` keeps changing.
fn held_lease(fake: &FakeKube, duration_seconds: u32) {
    fake.insert(
        "leases",
        "default",
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "cake-agents-reconciler"},
               "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": duration_seconds,
                        "renewTime": "2030-01-01T00:00:00.000000Z", "acquireTime": "2030-01-01T00:00:00.000000Z"}}),
    );
}

/// Requests of `method` to `path` (watches left out) so far.
async fn count(fake: &FakeKube, method: &str, path: &str) -> usize {
    fake.calls().await.iter().filter(|(m, p)| m == method && p.split('?').next() == Some(path)).count()
}

/// Every runtime event within `within`.
async fn collect(events: &mut BoxStream<'static, RuntimeEvent>, within: Duration) -> Vec<RuntimeEvent> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(e) = events.next().await {
            got.push(e);
        }
    })
    .await;
    got
}

fn spec(id: SessionId, password: &str) -> RuntimeSpec {
    RuntimeSpec {
        session_id: id,
        opencode_config:
            r#"{"model":"fake/fake-model","provider":{"fake":{"options":{"apiKey":"{env:CAKE_PROVIDER_0_API_KEY}"}}}}"#
                .into(),
        env: vec![("CAKE_PROVIDER_0_API_KEY".into(), SecretString::from("sk-live-1".to_owned()))],
        password: SecretString::from(password.to_owned()),
        broker_token: None,
        previous: None,
    }
}

/// Waits for the first runtime event `pick` accepts.
async fn next_event<T>(
    events: &mut BoxStream<'static, RuntimeEvent>,
    mut pick: impl FnMut(RuntimeEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Some(t) = pick(e) {
                return Some(t);
            }
        }
        None
    })
    .await;
    found.ok().flatten().expect("the expected runtime event")
}

/// A runtime named `replica-a` on the fake API server, with its session store.
async fn start_replica_a(fake: &FakeKube) -> (Sessions, KubeRuntime) {
    let sessions = Sessions::default();
    let rt = KubeRuntime::start(settings(fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap();
    (sessions, rt)
}

/// Whether `events` hold a failure of `id`.
fn failed(events: &[RuntimeEvent], id: SessionId) -> bool {
    events.iter().any(|e| matches!(e, RuntimeEvent::Failed { session_id, .. } if *session_id == id))
}

fn failed_of(id: SessionId) -> impl FnMut(RuntimeEvent) -> Option<String> {
    move |e| match e {
        RuntimeEvent::Failed { session_id, reason } if session_id == id => Some(reason),
        _ => None,
    }
}

fn progress_of(id: SessionId, want: &'static str) -> impl FnMut(RuntimeEvent) -> Option<()> {
    move |e| match e {
        RuntimeEvent::Progress { session_id, detail } if session_id == id && detail == want => Some(()),
        _ => None,
    }
}

fn writes(calls: &[(String, String)]) -> Vec<String> {
    calls
        .iter()
        .filter(|(m, p)| m != "GET" && !p.contains("/leases"))
        .map(|(m, p)| format!("{m} {}", p.split('?').next().unwrap()))
        .collect()
}

/// A pod someone else created, labelled like the runtime's own.
fn foreign_pod(id: SessionId, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": object_name(id), "labels": labels("cake-agents", id)},
        "spec": {"containers": [{"name": "data-plane", "image": "cake/data-plane:1"}]},
        "status": {"phase": phase, "podIP": "10.1.2.3",
                   "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
    })
}

#[tokio::test]
async fn provision_applies_the_pod_then_creates_its_owned_secret() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let mut s = settings(&fake, "replica-a");
    s.resources = json!({"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
    s.node_selector = [("pool".to_owned(), "agents".to_owned())].into();
    s.tolerations = vec![json!({"key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"})];
    s.image_pull_secrets = vec!["regcred".into()];
    s.service_account = Some("cake-session".into());
    s.image_pull_policy = "Always".into();
    s.instance = "team-a".into();
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    let id = sessions.add(Status::Provisioning);
    let name = object_name(id);
    let handle = rt.provision(spec(id, "pw-1")).await.unwrap();

    let requests = fake.requests().await;
    let applies: Vec<_> = requests
        .iter()
        .filter(|r| ["PATCH", "POST", "PUT"].contains(&r.method.as_str()) && !r.url.path().contains("/leases"))
        .collect();
    assert_eq!(
        applies.iter().map(|r| format!("{} {}", r.method, r.url.path())).collect::<Vec<_>>(),
        [format!("PATCH /api/v1/namespaces/{NS}/pods/{name}"), format!("POST /api/v1/namespaces/{NS}/secrets")],
        "the Pod first (server-side apply), then its Secret (created, never overwritten)"
    );
    let query = |r: &wiremock::Request| -> Vec<(String, String)> {
        r.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    };
    assert!(query(applies[0]).contains(&("fieldManager".into(), "cake-control-plane".into())));
    assert!(query(applies[0]).contains(&("force".into(), "true".into())));
    assert_eq!(applies[0].headers["content-type"], "application/apply-patch+yaml");
    assert!(query(applies[1]).contains(&("fieldManager".into(), "cake-control-plane".into())));
    let labels = json!({
        "app.kubernetes.io/name": "cake-agents",
        "app.kubernetes.io/instance": "team-a",
        "app.kubernetes.io/component": "data-plane",
        "app.kubernetes.io/part-of": "cake-agents",
        "app.kubernetes.io/managed-by": "cake-agents",
        "cake.ai/session-id": id.0.to_string()
    });
    let resources = json!({"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
    let security = json!({
        "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
    });
    let mounts = json!([
        {"name": "workspace", "mountPath": "/workspace"},
        {"name": "home", "mountPath": "/home/cake"},
        {"name": "tmp", "mountPath": "/tmp"}
    ]);
    let secret_ref = |key: &str| json!({"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}});
    let expected_pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 10,
            "serviceAccountName": "cake-session",
            "nodeSelector": {"pool": "agents"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{
                "name": "data-plane-init",
                "image": "cake/data-plane-init:1",
                "imagePullPolicy": "Always",
                "env": [
                    {"name": "HOME", "value": "/home/cake"},
                    {"name": "CAKE_WORKSPACE", "value": "/workspace"},
                    {"name": "CAKE_SESSION_ID", "value": id.0.to_string()}
                ],
                "workingDir": "/workspace",
                "volumeMounts": mounts,
                "resources": resources,
                "securityContext": security
            }],
            "containers": [{
                "name": "data-plane",
                "image": "cake/data-plane:1",
                "imagePullPolicy": "Always",
                "command": ["opencode", "serve", "--hostname", "0.0.0.0", "--port", "4096"],
                "workingDir": "/workspace",
                "env": [
                    {"name": "LANG", "value": "C.UTF-8"},
                    {"name": "HOME", "value": "/home/cake"},
                    {"name": "TMPDIR", "value": "/tmp"},
                    {"name": "XDG_CONFIG_HOME", "value": "/home/cake/.config"},
                    {"name": "XDG_DATA_HOME", "value": "/home/cake/.local/share"},
                    {"name": "XDG_CACHE_HOME", "value": "/home/cake/.cache"},
                    {"name": "XDG_STATE_HOME", "value": "/home/cake/.local/state"},
                    {"name": "OPENCODE_DISABLE_MODELS_FETCH", "value": "1"},
                    {"name": "OPENCODE_DISABLE_AUTOUPDATE", "value": "1"},
                    {"name": "OPENCODE_DISABLE_PROJECT_CONFIG", "value": "1"},
                    {"name": "GIT_TERMINAL_PROMPT", "value": "0"},
                    secret_ref("OPENCODE_SERVER_PASSWORD"),
                    secret_ref("OPENCODE_CONFIG_CONTENT"),
                    secret_ref("CAKE_PROVIDER_0_API_KEY")
                ],
                "ports": [{"name": "opencode", "containerPort": 4096, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": 4096}, "initialDelaySeconds": 1, "periodSeconds": 2,
                                   "timeoutSeconds": 1, "failureThreshold": 3},
                "volumeMounts": mounts,
                "resources": resources,
                "securityContext": security
            }],
            "volumes": [
                {"name": "workspace", "emptyDir": {"sizeLimit": "10Gi"}},
                {"name": "home", "emptyDir": {"sizeLimit": "2Gi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
            ]
        }
    });
    let pod_body: Value = applies[0].body_json().unwrap();
    assert_eq!(pod_body, expected_pod);
    assert!(!String::from_utf8_lossy(&applies[0].body).contains("sk-live-1"), "no secret in the pod spec");

    let uid = fake.pod(NS, &name).unwrap()["metadata"]["uid"].as_str().unwrap().to_owned();
    let secret_body: Value = applies[1].body_json().unwrap();
    assert_eq!(
        secret_body["metadata"],
        json!({
            "name": name, "namespace": NS, "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "controller": true}]
        })
    );
    assert_eq!((secret_body["kind"].as_str(), secret_body["type"].as_str()), (Some("Secret"), Some("Opaque")));
    let data = secret_data(&secret_body);
    assert_eq!(data.len(), 3);
    assert_eq!(data["OPENCODE_SERVER_PASSWORD"], "pw-1");
    assert_eq!(data["CAKE_PROVIDER_0_API_KEY"], "sk-live-1");
    assert!(data["OPENCODE_CONFIG_CONTENT"].contains("{env:CAKE_PROVIDER_0_API_KEY}"));
    assert_eq!(handle, json!({"kind": "kubernetes", "sessionId": id.0, "namespace": NS, "pod": name, "uid": uid}));

    // A retried provision (another password generated) finds the pod alive and its Secret in
    // place: nothing is written, the running OpenCode keeps the password it has.
    let again = rt.provision(spec(id, "pw-other")).await.unwrap();
    assert_eq!(again, handle);
    let writes = fake
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() != "GET" && !r.url.path().contains("/leases"))
        .count();
    assert_eq!(writes, 2, "nothing written again");
    assert_eq!(secret_data(&fake.secret(NS, &name).unwrap())["OPENCODE_SERVER_PASSWORD"], "pw-1");
    rt.shutdown().await;
}

#[tokio::test]
async fn two_replicas_provisioning_one_session_agree_on_its_password() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    held_lease(&fake, 30);
    let a = Arc::new(KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap());
    let b = Arc::new(KubeRuntime::start(settings(&fake, "replica-b"), Arc::new(sessions.clone())).await.unwrap());
    let id = sessions.add(Status::Provisioning);
    let name = object_name(id);
    let (ha, hb) = tokio::join!(a.provision(spec(id, "pw-a")), b.provision(spec(id, "pw-b")));
    let (ha, hb) = (ha.unwrap(), hb.unwrap());
    assert_eq!(ha, hb, "one pod");
    let stored = secret_data(&fake.secret(NS, &name).unwrap())["OPENCODE_SERVER_PASSWORD"].clone();
    assert!(stored == "pw-a" || stored == "pw-b", "{stored}");
    // Each replica talks to OpenCode with the password its pod actually reads.
    fake.set_pod_status(NS, &name, ready_status("127.0.0.5"));
    for (rt, handle) in [(&a, &ha), (&b, &hb)] {
        let endpoint = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(e) = rt.endpoint(handle).await.unwrap() {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the watchers see the pod ready");
        assert_eq!(secrecy::ExposeSecret::expose_secret(&endpoint.password), stored);
    }
    // The Secret was created once (one of the two got 409 AlreadyExists and adopted it).
    let created: Vec<u16> = fake
        .answers()
        .into_iter()
        .filter(|(m, p, _)| m == "POST" && p.ends_with("/secrets"))
        .map(|(_, _, code)| code)
        .collect();
    assert!(created == [201] || created == [201, 409] || created == [409, 201], "{created:?}");
    assert!(!fake.calls().await.iter().any(|(m, p)| (m == "PUT" || m == "PATCH") && p.contains("/secrets/")));

    // A Secret left by an earlier pod of the same name is replaced, with the version read.
    let other = sessions.add(Status::Provisioning);
    fake.insert(
        "secrets",
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": object_name(other),
               "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": object_name(other), "uid": "gone-pod"}]},
               "data": {"OPENCODE_SERVER_PASSWORD": "c3RhbGU="}}),
    );
    let handle = a.provision(spec(other, "pw-new")).await.unwrap();
    let secret = fake.secret(NS, &object_name(other)).unwrap();
    assert_eq!(secret_data(&secret)["OPENCODE_SERVER_PASSWORD"], "pw-new");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], handle["uid"]);
    assert!(fake.answers().iter().any(|(m, p, code)| m == "PUT" && p.ends_with(&object_name(other)) && *code == 200));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn pod_phases_become_progress_then_ready_with_an_answering_opencode() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let rt = Arc::new(KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap());
    let mut events = rt.events();
    let id = sessions.add(Status::Provisioning);
    let name = object_name(id);
    let handle = rt.provision(spec(id, "pw-2")).await.unwrap();
    next_event(&mut events, progress_of(id, "waiting for the pod to be scheduled")).await;
    let waiting = tokio::spawn({
        let rt = rt.clone();
        let handle = handle.clone();
        async move { rt.wait_ready(&handle).await }
    });

    let scheduled = json!({"type": "PodScheduled", "status": "True"});
    let init_done = json!({"name": "data-plane-init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
    for (status, step) in [
        (
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}),
            "waiting for a node",
        ),
        (json!({"phase": "Pending", "conditions": [scheduled]}), "scheduled"),
        (
            json!({"phase": "Pending", "conditions": [scheduled],
                   "initContainerStatuses": [{"name": "data-plane-init", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
            "pulling image cake/data-plane-init:1",
        ),
        (
            json!({"phase": "Pending", "conditions": [scheduled],
                   "initContainerStatuses": [{"name": "data-plane-init", "state": {"running": {}}}]}),
            "preparing the workspace",
        ),
        (
            json!({"phase": "Pending", "conditions": [scheduled], "initContainerStatuses": [init_done],
                   "containerStatuses": [{"name": "data-plane", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            "pulling image cake/data-plane:1",
        ),
        (
            json!({"phase": "Running", "conditions": [scheduled, {"type": "Ready", "status": "False"}], "podIP": "127.0.0.3",
                   "initContainerStatuses": [init_done], "containerStatuses": [{"name": "data-plane", "state": {"running": {}}}]}),
            "starting OpenCode",
        ),
    ] {
        fake.set_pod_status(NS, &name, status);
        next_event(&mut events, progress_of(id, step)).await;
    }
    assert!(!waiting.is_finished(), "not ready before the pod is");

    // OpenCode "in the pod": answers its health route, only with the session's password.
    let listener = std::net::TcpListener::bind("127.0.0.3:4096").unwrap();
    let opencode = MockServer::builder().listener(listener).start().await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path("/global/health"))
        .and(matchers::header("authorization", "Basic b3BlbmNvZGU6cHctMg=="))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"healthy": true})))
        .mount(&opencode)
        .await;
    fake.set_pod_status(NS, &name, ready_status("127.0.0.3"));
    let endpoint = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(endpoint.base_url, "http://127.0.0.3:4096");
    assert_eq!(endpoint.username, "opencode");
    assert_eq!(secrecy::ExposeSecret::expose_secret(&endpoint.password), "pw-2");
    assert!(!opencode.received_requests().await.unwrap().is_empty(), "readiness means OpenCode answered");
    let again = rt.endpoint(&handle).await.unwrap().expect("a ready pod has an endpoint");
    assert_eq!(again.base_url, "http://127.0.0.3:4096");
    rt.shutdown().await;
}

#[tokio::test]
async fn pod_failures_fail_wait_ready_and_reach_the_service_with_their_reason() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let rt = Arc::new(KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap());
    let mut events = rt.events();
    let waiting_on = |reason: &str, message: &str| {
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
               "containerStatuses": [{"name": "data-plane", "image": "cake/data-plane:1",
                   "state": {"waiting": {"reason": reason, "message": message}}}]})
    };
    // What will not heal by waiting fails at once (no grace).
    let cases = [
        (
            waiting_on("InvalidImageName", "couldn't parse image reference \"cake/data-plane:1:\""),
            "image cake/data-plane:1 could not be pulled: InvalidImageName: couldn't parse image reference \"cake/data-plane:1:\"",
        ),
        (
            waiting_on("ErrImageNeverPull", "image is not present with pull policy of Never"),
            "image cake/data-plane:1 could not be pulled: ErrImageNeverPull: image is not present with pull policy of Never",
        ),
        (
            json!({"phase": "Running", "containerStatuses": [{"name": "data-plane",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
            "OpenCode keeps crashing (CrashLoopBackOff); last exit code 1",
        ),
        (
            json!({"phase": "Failed", "containerStatuses": [{"name": "data-plane",
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
            "OpenCode was killed for running out of memory (OOMKilled; memory limit 2Gi)",
        ),
    ];
    for (status, reason) in cases {
        let id = sessions.add(Status::Provisioning);
        let handle = rt.provision(spec(id, "pw")).await.unwrap();
        let waiting = tokio::spawn({
            let rt = rt.clone();
            async move { rt.wait_ready(&handle).await }
        });
        fake.set_pod_status(NS, &object_name(id), status);
        assert_eq!(next_event(&mut events, failed_of(id)).await, reason);
        let err = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap().unwrap_err();
        assert!(err.to_string().contains(reason), "wait_ready says why: {err}");
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn a_pod_held_up_by_what_usually_heals_shows_progress_then_fails_after_the_grace() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let mut s = settings(&fake, "replica-a");
    s.pending_grace = Duration::from_millis(1500);
    // Ticks (and housekeeping) every 200 ms.
    s.lease_duration = Duration::from_millis(600);
    let rt = Arc::new(KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap());
    let mut events = rt.events();
    let unschedulable = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]});
    let pull_failed = |reason: &str| {
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
               "containerStatuses": [{"name": "data-plane", "image": "cake/data-plane:1",
                   "state": {"waiting": {"reason": reason, "message": "429 Too Many Requests"}}}]})
    };
    let cases = [
        (
            vec![unschedulable.clone()],
            "waiting for a node: 0/3 nodes are available: 3 Insufficient cpu.",
            "the pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
        ),
        (
            vec![pull_failed("ErrImagePull"), pull_failed("ImagePullBackOff")],
            "pulling image cake/data-plane:1 (retrying after ErrImagePull): 429 Too Many Requests",
            "image cake/data-plane:1 could not be pulled: ImagePullBackOff: 429 Too Many Requests",
        ),
    ];
    for (statuses, shown, reason) in cases {
        let id = sessions.add(Status::Provisioning);
        let handle = rt.provision(spec(id, "pw")).await.unwrap();
        let waiting = tokio::spawn({
            let rt = rt.clone();
            async move { rt.wait_ready(&handle).await }
        });
        let started = tokio::time::Instant::now();
        let mut statuses = statuses.into_iter();
        fake.set_pod_status(NS, &object_name(id), statuses.next().unwrap());
        let detail = shown.to_owned();
        next_event(&mut events, move |e| match e {
            RuntimeEvent::Progress { session_id, detail: d } if session_id == id && d == detail => Some(()),
            RuntimeEvent::Failed { session_id, reason } if session_id == id => panic!("failed at once: {reason}"),
            _ => None,
        })
        .await;
        for status in statuses {
            fake.set_pod_status(NS, &object_name(id), status);
        }
        // No further pod event: the grace running out is enough.
        assert_eq!(next_event(&mut events, failed_of(id)).await, reason);
        assert!(started.elapsed() >= Duration::from_millis(1400), "not before the grace: {:?}", started.elapsed());
        let err = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap().unwrap_err();
        assert!(err.to_string().contains(reason), "{err}");
    }

    // Healed within the grace (the autoscaler added a node): never fails.
    let id = sessions.add(Status::Provisioning);
    rt.provision(spec(id, "pw")).await.unwrap();
    fake.set_pod_status(NS, &object_name(id), unschedulable);
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.set_pod_status(NS, &object_name(id), ready_status("127.0.0.9"));
    let later = collect(&mut events, Duration::from_secs(2)).await;
    assert!(!failed(&later, id), "{later:?}");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_pod_deleted_from_outside_fails_its_session() {
    let fake = FakeKube::start().await;
    let (sessions, rt) = start_replica_a(&fake).await;
    let mut events = rt.events();
    let id = sessions.add(Status::Provisioning);
    rt.provision(spec(id, "pw")).await.unwrap();
    fake.set_pod_status(NS, &object_name(id), ready_status("127.0.0.4"));
    fake.delete_pod(NS, &object_name(id), true);
    assert_eq!(next_event(&mut events, failed_of(id)).await, DELETED);
    // Reported once, though the watch shows the pod terminating and then gone.
    let again = collect(&mut events, Duration::from_millis(800)).await;
    assert!(!failed(&again, id), "{again:?}");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_410_gone_on_the_watch_relists_and_notices_pods_deleted_meanwhile() {
    let fake = FakeKube::start().await;
    let (sessions, rt) = start_replica_a(&fake).await;
    let mut events = rt.events();
    let id = sessions.add(Status::Provisioning);
    rt.provision(spec(id, "pw")).await.unwrap();
    // Through the watch, so the watcher is known to be following.
    fake.set_pod_status(
        NS,
        &object_name(id),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}),
    );
    next_event(&mut events, progress_of(id, "waiting for a node")).await;
    let is_list = |r: &wiremock::Request| {
        r.method.as_str() == "GET"
            && r.url.path() == format!("/api/v1/namespaces/{NS}/pods")
            && !r.url.query().unwrap_or_default().contains("watch=true")
    };
    let lists_before = fake.requests().await.iter().filter(|r| is_list(r)).count();

    // The pod goes while the watch is broken; the next watch answers 410 Gone.
    fake.delete_pod(NS, &object_name(id), false);
    fake.expire_watch();
    assert_eq!(next_event(&mut events, failed_of(id)).await, DELETED);
    let lists_after = fake.requests().await.iter().filter(|r| is_list(r)).count();
    assert!(lists_after > lists_before, "the watcher listed again after 410 ({lists_before} → {lists_after})");
    // Lists and watches select this installation's data-plane pods only.
    let requests = fake.requests().await;
    let pod_reads: Vec<_> = requests
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == format!("/api/v1/namespaces/{NS}/pods"))
        .collect();
    assert!(pod_reads.iter().any(|r| r.url.query().unwrap_or_default().contains("watch=true")));
    for r in pod_reads {
        let selector = r.url.query_pairs().find(|(k, _)| k == "labelSelector").map(|(_, v)| v.into_owned());
        assert_eq!(
            selector.as_deref(),
            Some("app.kubernetes.io/managed-by=cake-agents,app.kubernetes.io/instance=cake-agents"),
            "{}",
            r.url
        );
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn conflicts_and_server_errors_are_retried_and_teardown_deletes_pod_and_secret() {
    let fake = FakeKube::start().await;
    let (sessions, rt) = start_replica_a(&fake).await;
    let id = sessions.add(Status::Provisioning);
    let name = object_name(id);
    fake.fail_next("PATCH", &format!("/pods/{name}"), 409);
    fake.fail_next("PATCH", &format!("/pods/{name}"), 500);
    fake.fail_next("POST", "/secrets", 500);
    let handle = rt.provision(spec(id, "pw")).await.unwrap();
    assert_eq!(
        writes(&fake.calls().await),
        [
            format!("PATCH /api/v1/namespaces/{NS}/pods/{name}"),
            format!("PATCH /api/v1/namespaces/{NS}/pods/{name}"),
            format!("PATCH /api/v1/namespaces/{NS}/pods/{name}"),
            format!("POST /api/v1/namespaces/{NS}/secrets"),
            format!("POST /api/v1/namespaces/{NS}/secrets"),
        ],
        "409 and 500 answers were retried until the apply and the create succeeded"
    );
    assert!(fake.pod(NS, &name).is_some() && fake.secret(NS, &name).is_some());

    // Teardown deletes the Pod and, explicitly, the Secret (a 500 on the way is retried).
    fake.fail_next("DELETE", &format!("/secrets/{name}"), 500);
    rt.teardown(id, Some(handle.clone())).await.unwrap();
    let deletes: Vec<String> = writes(&fake.calls().await).into_iter().filter(|w| w.starts_with("DELETE")).collect();
    assert_eq!(
        deletes,
        [
            format!("DELETE /api/v1/namespaces/{NS}/pods/{name}"),
            format!("DELETE /api/v1/namespaces/{NS}/secrets/{name}"),
            format!("DELETE /api/v1/namespaces/{NS}/secrets/{name}"),
        ]
    );
    assert!(fake.pod(NS, &name).is_none() && fake.secret(NS, &name).is_none());
    rt.teardown(id, Some(handle)).await.expect("teardown is idempotent");

    // A write that keeps failing gives up after the bounded attempts (3 here), with the
    // API's answer.
    let other = sessions.add(Status::Provisioning);
    let path = format!("/api/v1/namespaces/{NS}/pods/{}", object_name(other));
    for _ in 0..4 {
        fake.fail_next("PATCH", &format!("/pods/{}", object_name(other)), 500);
    }
    let err = rt.provision(spec(other, "pw")).await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert_eq!(count(&fake, "PATCH", &path).await, 3, "exactly the configured attempts");
    assert!(fake.pod(NS, &object_name(other)).is_none());
    rt.shutdown().await;
}

#[tokio::test]
async fn an_api_call_that_gets_no_answer_is_abandoned_and_retried() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    held_lease(&fake, 30);
    let mut s = settings(&fake, "replica-a");
    s.api_timeout = Duration::from_millis(300);
    s.lease_duration = Duration::from_millis(600);
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    // The watcher's first list is through, so only the calls below are held back.
    fake.wait_for_requests("the watcher's first list", WAIT, |reqs| {
        reqs.iter().any(|r| r.url.query().unwrap_or_default().contains("watch=true"))
    })
    .await;

    // A read that hangs (a half-open connection) is abandoned after the timeout and retried.
    let id = sessions.add(Status::Provisioning);
    let name = object_name(id);
    fake.delay_next("GET", &format!("/pods/{name}"), Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), rt.provision(spec(id, "pw"))).await.expect("not stuck").unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(count(&fake, "GET", &format!("/api/v1/namespaces/{NS}/pods/{name}")).await, 2);

    // A delete inside a stop or a teardown likewise.
    fake.delay_next("DELETE", &format!("/pods/{name}"), Duration::from_secs(30));
    tokio::time::timeout(Duration::from_secs(5), rt.teardown(id, None)).await.expect("not stuck").unwrap();
    assert!(fake.pod(NS, &name).is_none());

    // Health answers within the timeout.
    fake.delay_next("GET", &format!("/namespaces/{NS}/pods"), Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    let err = rt.health().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(err.to_string().contains("no answer"), "{err}");

    // A lease read that hangs does not stop the elector: it reads again on the next tick.
    let reads = count(&fake, "GET", LEASE_PATH).await;
    fake.delay_next("GET", "/leases/cake-agents-reconciler", Duration::from_secs(30));
    fake.wait_for_requests("lease reads after a hung one", Duration::from_secs(3), |reqs| {
        reqs.iter().filter(|r| r.method.as_str() == "GET" && r.url.path() == LEASE_PATH).count() >= reads + 3
    })
    .await;
    rt.shutdown().await;
}

#[tokio::test]
async fn the_lease_holder_deletes_orphan_pods_and_fails_sessions_whose_pods_vanished() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let vanished = sessions.add(Status::Ready);
    let failed = sessions.add(Status::Failed);
    let failed_but_healthy = sessions.add(Status::Failed);
    let healthy = sessions.add(Status::Ready);
    let orphan = SessionId(uuid::Uuid::new_v4());
    for (id, phase) in [(failed, "Pending"), (failed_but_healthy, "Running"), (healthy, "Running"), (orphan, "Running")]
    {
        let mut pod = foreign_pod(id, phase);
        if phase == "Pending" {
            pod["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]});
        }
        fake.insert("pods", NS, pod);
        fake.insert(
            "secrets",
            NS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": object_name(id)}}),
        );
    }
    let mut s = settings(&fake, "replica-a");
    s.reconcile_interval = Duration::from_secs(1);
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    let mut events = rt.events();
    assert_eq!(next_event(&mut events, failed_of(vanished)).await, DELETED);
    let name = |id: SessionId| object_name(id);
    fake.wait_for_requests("the orphan's and the failed session's objects deleted", WAIT, |reqs| {
        [orphan, failed].iter().all(|id| {
            ["pods", "secrets"].iter().all(|kind| {
                reqs.iter().any(|r| {
                    r.method.as_str() == "DELETE"
                        && r.url.path() == format!("/api/v1/namespaces/{NS}/{kind}/{}", name(*id))
                })
            })
        })
    })
    .await;
    assert!(fake.pod(NS, &name(orphan)).is_none() && fake.secret(NS, &name(orphan)).is_none());
    assert!(fake.pod(NS, &name(failed)).is_none(), "a failed session's pod that is not ready goes");
    assert!(fake.pod(NS, &name(healthy)).is_some(), "a ready session's pod stays");
    assert!(
        fake.pod(NS, &name(failed_but_healthy)).is_some(),
        "a failed session's ready pod keeps its workspace until the session is deleted"
    );
    let lease = fake.lease("default", "cake-agents-reconciler").expect("the lease was taken");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 30);
    // Renewed with the version it read (optimistic concurrency), not recreated: the replace
    // succeeds and moves renewTime and resourceVersion on.
    let version = |l: &Value| l["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap();
    fake.wait_for_requests("a lease renewal", WAIT, |reqs| {
        reqs.iter().any(|r| r.method.as_str() == "PUT" && r.url.path() == LEASE_PATH)
    })
    .await;
    let renewed = fake.lease("default", "cake-agents-reconciler").unwrap();
    assert!(
        fake.answers().iter().any(|(m, p, code)| m == "PUT" && p == LEASE_PATH && *code == 200),
        "{:?}",
        fake.answers()
    );
    assert!(!fake.answers().iter().any(|(m, p, code)| m == "PUT" && p == LEASE_PATH && *code != 200));
    assert!(version(&renewed) > version(&lease), "{lease} → {renewed}");
    assert!(renewed["spec"]["renewTime"].as_str().unwrap() > lease["spec"]["renewTime"].as_str().unwrap());
    assert_eq!(renewed["spec"]["acquireTime"], lease["spec"]["acquireTime"]);
    assert_eq!(renewed["spec"]["holderIdentity"], "replica-a");
    rt.shutdown().await;
    let lease = fake.lease("default", "cake-agents-reconciler").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "a clean shutdown hands the lease on: {lease}");
}

#[tokio::test]
async fn a_lease_held_by_another_replica_means_no_reconciliation_until_it_is_released() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let orphan = SessionId(uuid::Uuid::new_v4());
    fake.insert("pods", NS, foreign_pod(orphan, "Running"));
    held_lease(&fake, 30);
    let mut s = settings(&fake, "replica-a");
    s.reconcile_interval = Duration::from_millis(300);
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    fake.wait_for_requests("the follower to read the lease a few times", WAIT, |reqs| {
        reqs.iter().filter(|r| r.method.as_str() == "GET" && r.url.path() == LEASE_PATH).count() >= 4
    })
    .await;
    let calls = fake.calls().await;
    assert!(writes(&calls).is_empty(), "a follower deletes nothing: {calls:?}");
    assert!(!calls.iter().any(|(m, p)| p.contains("/leases") && m != "GET"), "nor touches the lease: {calls:?}");
    assert!(fake.pod(NS, &object_name(orphan)).is_some());

    // The holder hands the lease on: this replica takes it and reconciles.
    let mut lease = fake.lease("default", "cake-agents-reconciler").unwrap();
    lease["spec"]["holderIdentity"] = Value::Null;
    fake.insert("leases", "default", lease);
    fake.wait_for_requests("the orphan deleted by the new holder", WAIT, |reqs| {
        reqs.iter().any(|r| r.method.as_str() == "DELETE" && r.url.path().ends_with(&object_name(orphan)))
    })
    .await;
    let lease = fake.lease("default", "cake-agents-reconciler").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_silent_holder_loses_the_lease_after_its_duration_on_the_followers_own_clock() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    // replica-b's renewTime is years ahead (a skewed clock): only the follower's own clock,
    // watching resourceVersion not change for leaseDurationSeconds (2 s), decides.
    held_lease(&fake, 2);
    let mut s = settings(&fake, "replica-a");
    s.lease_duration = Duration::from_millis(600);
    let started = tokio::time::Instant::now();
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    let holder = || fake.lease("default", "cake-agents-reconciler").unwrap()["spec"]["holderIdentity"].clone();

    // While replica-b renews (resourceVersion moves), it keeps the lease however long.
    let renewing_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < renewing_until {
        let lease = fake.lease("default", "cake-agents-reconciler").unwrap();
        fake.insert("leases", "default", lease);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(holder(), "replica-b", "taken while the holder renews");
    }
    let silent_since = tokio::time::Instant::now();
    // Then it goes silent: taken over, but not before 2 s have passed on this clock.
    let taken_at = loop {
        if holder() == "replica-a" {
            break tokio::time::Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let silent = taken_at - silent_since;
    assert!(silent >= Duration::from_millis(1700), "taken over after {silent:?} of silence");
    let lease = fake.lease("default", "cake-agents-reconciler").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_ne!(lease["spec"]["acquireTime"], "2030-01-01T00:00:00.000000Z");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_reconcile_pass_that_outlives_its_lease_stops_before_deleting() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let orphan = SessionId(uuid::Uuid::new_v4());
    fake.insert("pods", NS, foreign_pod(orphan, "Running"));
    held_lease(&fake, 30);
    let mut s = settings(&fake, "replica-a");
    // The lease is good for 1 s after a renewal; a pass may act for two thirds of it.
    s.lease_duration = Duration::from_secs(1);
    s.reconcile_interval = Duration::from_millis(200);
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    fake.wait_for_requests("the watcher's first list", WAIT, |reqs| {
        reqs.iter().any(|r| r.url.query().unwrap_or_default().contains("watch=true"))
    })
    .await;
    // The pass's first list answers only after the lease may have passed on.
    fake.delay_next("GET", &format!("/namespaces/{NS}/pods"), Duration::from_millis(1200));
    let mut lease = fake.lease("default", "cake-agents-reconciler").unwrap();
    lease["spec"]["holderIdentity"] = Value::Null;
    fake.insert("leases", "default", lease);
    fake.wait_for_requests("the orphan deleted after all", WAIT, |reqs| {
        reqs.iter().any(|r| r.method.as_str() == "DELETE" && r.url.path().ends_with(&object_name(orphan)))
    })
    .await;
    // Between the slow list and the delete, the lease was renewed: the slow pass deleted
    // nothing, the next one (with a fresh lease) did.
    let requests = fake.requests().await;
    let is_pod_list = |r: &wiremock::Request| {
        r.method.as_str() == "GET"
            && r.url.path() == format!("/api/v1/namespaces/{NS}/pods")
            && !r.url.query().unwrap_or_default().contains("watch=true")
    };
    let slow_list =
        requests.iter().position(|r| is_pod_list(r) && !r.url.query().unwrap_or_default().contains("limit"));
    let slow_list = slow_list.expect("the reconciler listed pods");
    let delete = requests.iter().position(|r| r.method.as_str() == "DELETE").unwrap();
    assert!(slow_list < delete);
    assert!(
        requests[slow_list..delete].iter().any(|r| r.method.as_str() == "PUT" && r.url.path() == LEASE_PATH),
        "a delete right after the slow list, without renewing the lease first"
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn sessions_whose_replica_is_gone_are_reported_by_the_lease_holder_only() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let long_ago = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let stalled_starting = sessions.add_updated(Status::Starting, long_ago);
    let stalled_provisioning = sessions.add_updated(Status::Provisioning, long_ago);
    let stalled_deleting = sessions.add_updated(Status::Deleting, long_ago);
    let fresh = sessions.add(Status::Provisioning);
    let quiet_ready = sessions.add_updated(Status::Ready, long_ago);
    let quiet_failed = sessions.add_updated(Status::Failed, long_ago);
    fake.insert("pods", NS, foreign_pod(stalled_starting, "Running"));
    fake.insert("pods", NS, foreign_pod(quiet_ready, "Running"));
    let mut s = settings(&fake, "replica-a");
    s.reconcile_interval = Duration::from_millis(500);
    let leader = KubeRuntime::start(s.clone(), Arc::new(sessions.clone())).await.unwrap();
    fake.wait_for_requests("replica-a to take the lease", WAIT, |reqs| {
        reqs.iter().any(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/leases"))
    })
    .await;
    s.identity = Some("replica-b".into());
    let follower = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    let (mut lead_events, mut follow_events) = (leader.events(), follower.events());
    let stalled = |events: Vec<RuntimeEvent>| -> std::collections::BTreeSet<SessionId> {
        events
            .into_iter()
            .filter_map(|e| match e {
                RuntimeEvent::Stalled { session_id } => Some(session_id),
                _ => None,
            })
            .collect()
    };
    let (lead, follow) = tokio::join!(
        collect(&mut lead_events, Duration::from_secs(2)),
        collect(&mut follow_events, Duration::from_secs(2))
    );
    assert_eq!(
        stalled(lead),
        [stalled_starting, stalled_provisioning, stalled_deleting].into_iter().collect(),
        "not {fresh:?} (recent), {quiet_ready:?} or {quiet_failed:?} (settled)"
    );
    assert!(stalled(follow).is_empty(), "only the lease holder takes sessions over");
    follower.shutdown().await;
    leader.shutdown().await;
}

#[tokio::test]
async fn stop_keeps_a_healthy_pod_and_an_ended_pods_logs_but_not_its_keys() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    held_lease(&fake, 30);
    let rt = KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap();
    let mut ids = Vec::new();
    for status in [
        ready_status("127.0.0.6"),
        json!({"phase": "Failed", "containerStatuses": [{"name": "data-plane",
               "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
               "containerStatuses": [{"name": "data-plane", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
    ] {
        let id = sessions.add(Status::Failed);
        rt.provision(spec(id, "pw")).await.unwrap();
        fake.set_pod_status(NS, &object_name(id), status);
        ids.push(id);
    }
    let [healthy, ended, stuck] = ids[..] else { unreachable!() };
    let fake = &fake;
    let deletes = |id: SessionId| {
        let name = object_name(id);
        async move {
            writes(&fake.calls().await)
                .into_iter()
                .filter(|w| w.starts_with("DELETE") && w.ends_with(&name))
                .map(|w| w.split('/').nth(5).unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // The session failed on a lost connection while its pod is fine: the workspace stays.
    rt.stop(healthy).await.unwrap();
    assert!(deletes(healthy).await.is_empty());
    assert!(fake.pod(NS, &object_name(healthy)).is_some() && fake.secret(NS, &object_name(healthy)).is_some());
    // Ended: the pod stays for `kubectl logs`, the provider keys go.
    rt.stop(ended).await.unwrap();
    assert_eq!(deletes(ended).await, ["secrets"]);
    assert!(fake.pod(NS, &object_name(ended)).is_some() && fake.secret(NS, &object_name(ended)).is_none());
    // Failed without ending (it would hold a node's resources): both go.
    rt.stop(stuck).await.unwrap();
    assert_eq!(deletes(stuck).await, ["pods", "secrets"]);
    // No pod at all: the Secret is deleted if left; stop is idempotent.
    rt.stop(stuck).await.unwrap();
    rt.shutdown().await;
}

#[tokio::test]
async fn failures_reported_before_the_service_listens_are_not_lost() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    held_lease(&fake, 30);
    let id = sessions.add(Status::Starting);
    let mut pod = foreign_pod(id, "Failed");
    pod["status"]["containerStatuses"] =
        json!([{"name": "data-plane", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]);
    fake.insert("pods", NS, pod);
    let rt = KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap();
    // The watcher has long reported it when the service subscribes.
    fake.wait_for_requests("the watcher's first list", WAIT, |reqs| {
        reqs.iter().any(|r| r.url.query().unwrap_or_default().contains("watch=true"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut events = rt.events();
    let reason = next_event(&mut events, failed_of(id)).await;
    assert!(reason.contains("OOMKilled"), "{reason}");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_runtime_dropped_without_shutdown_stops_its_background_work() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let mut s = settings(&fake, "replica-a");
    s.lease_duration = Duration::from_millis(600);
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    fake.wait_for_requests("a few lease renewals", WAIT, |reqs| {
        reqs.iter().filter(|r| r.url.path() == LEASE_PATH).count() >= 3
    })
    .await;
    // E.g. the control plane failed to build after starting the runtime.
    drop(rt);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = fake.requests().await.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.requests().await.len(), after_drop, "no lease renewals, no watches after the drop");
}

#[tokio::test]
async fn a_pod_created_while_the_watcher_relists_is_not_taken_for_deleted() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    held_lease(&fake, 30);
    let rt = KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap();
    let mut events = rt.events();
    let before = sessions.add(Status::Starting);
    rt.provision(spec(before, "pw")).await.unwrap();
    fake.set_pod_status(
        NS,
        &object_name(before),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}),
    );
    next_event(&mut events, progress_of(before, "waiting for a node")).await;
    let lists = |reqs: &[wiremock::Request]| {
        reqs.iter()
            .filter(|r| {
                r.method.as_str() == "GET"
                    && r.url.path() == format!("/api/v1/namespaces/{NS}/pods")
                    && !r.url.query().unwrap_or_default().contains("watch=true")
            })
            .count()
    };
    let lists_before = lists(&fake.requests().await);

    // The watch expires; the relist's answer is slow, and a pod is created meanwhile (after
    // the list was taken, so it is not in it).
    fake.delay_next("GET", &format!("/namespaces/{NS}/pods"), Duration::from_millis(1500));
    fake.expire_watch();
    fake.wait_for_requests("the relist", WAIT, |reqs| lists(reqs) > lists_before).await;
    let during = sessions.add(Status::Provisioning);
    rt.provision(spec(during, "pw")).await.unwrap();
    let later = collect(&mut events, Duration::from_secs(3)).await;
    assert!(
        !later.iter().any(|e| matches!(e, RuntimeEvent::Failed { .. })),
        "nothing failed (the new pod is not \"deleted\", the old one still runs): {later:?}"
    );
    assert!(fake.pod(NS, &object_name(during)).is_some() && fake.pod(NS, &object_name(before)).is_some());
    // And the watch carries on: the new pod's changes arrive.
    fake.set_pod_status(
        NS,
        &object_name(during),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}),
    );
    next_event(&mut events, progress_of(during, "waiting for a node")).await;
    rt.shutdown().await;
}
