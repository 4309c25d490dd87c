//! The Kubernetes runtime against a fake API server: the exact requests it sends (apply
//! bodies, field manager, force, deletes), how pod statuses become progress, readiness and
//! failures with reasons, `410 Gone` relists, retries on 409/500, and the Lease-holding
//! reconciler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cake_adapters::kubernetes::resources::{labels, object_name};
use cake_adapters::kubernetes::{KubeRuntime, KubeSettings};
use cake_core::ports::{NewSession, RuntimeEvent, RuntimeSpec, SessionRepository, SessionRuntime, SessionUpdate};
use cake_core::session::{Cursor, Limit, ListFilter, Page, RuntimeState, Session, SessionId, Status};
use cake_core::user::UserId;
use cake_core::{CoreError, Result};
use cake_tests::fake_kube::{FakeKube, ready_status, secret_data};
use futures::StreamExt;
use futures::stream::BoxStream;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

const NS: &str = "sessions";
const WAIT: Duration = Duration::from_secs(10);

/// The sessions the reconciler sees; nothing else of the repository is used by the runtime.
#[derive(Default, Clone)]
struct Sessions(Arc<Mutex<Vec<(SessionId, Status)>>>);

impl Sessions {
    fn add(&self, status: Status) -> SessionId {
        let id = SessionId(uuid::Uuid::new_v4());
        self.0.lock().unwrap().push((id, status));
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
    async fn get(&self, _: SessionId) -> Result<Option<Session>> {
        unused()
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
        Ok(self.0.lock().unwrap().clone())
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
    s
}

fn spec(id: SessionId, password: &str) -> RuntimeSpec {
    RuntimeSpec {
        session_id: id,
        opencode_config:
            r#"{"model":"fake/fake-model","provider":{"fake":{"options":{"apiKey":"{env:CAKE_PROVIDER_0_API_KEY}"}}}}"#
                .into(),
        env: vec![("CAKE_PROVIDER_0_API_KEY".into(), SecretString::from("sk-live-1".to_owned()))],
        password: SecretString::from(password.to_owned()),
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
async fn provision_applies_the_pod_then_its_owned_secret_with_server_side_apply() {
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
    let applies: Vec<_> = requests.iter().filter(|r| r.method.as_str() == "PATCH").collect();
    assert_eq!(
        applies.iter().map(|r| r.url.path().to_owned()).collect::<Vec<_>>(),
        [format!("/api/v1/namespaces/{NS}/pods/{name}"), format!("/api/v1/namespaces/{NS}/secrets/{name}")],
        "the Pod first, then its Secret"
    );
    for r in &applies {
        let query: Vec<(String, String)> = r.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        assert!(query.contains(&("fieldManager".into(), "cake-control-plane".into())), "{query:?}");
        assert!(query.contains(&("force".into(), "true".into())), "{query:?}");
        assert_eq!(r.headers["content-type"], "application/apply-patch+yaml");
    }
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
                {"name": "workspace", "emptyDir": {}},
                {"name": "home", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}}
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
    let patches = fake.requests().await.iter().filter(|r| r.method.as_str() == "PATCH").count();
    assert_eq!(patches, 2, "no further apply");
    assert_eq!(secret_data(&fake.secret(NS, &name).unwrap())["OPENCODE_SERVER_PASSWORD"], "pw-1");
    rt.shutdown().await;
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
    let cases = [
        (
            waiting_on("ErrImagePull", "rpc error: manifest unknown"),
            "image cake/data-plane:1 could not be pulled: ErrImagePull: rpc error: manifest unknown",
        ),
        (
            waiting_on("ImagePullBackOff", "Back-off pulling image"),
            "image cake/data-plane:1 could not be pulled: ImagePullBackOff: Back-off pulling image",
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
        (
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."}]}),
            "the pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
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
async fn a_pod_deleted_from_outside_fails_its_session() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let rt = KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap();
    let mut events = rt.events();
    let id = sessions.add(Status::Provisioning);
    rt.provision(spec(id, "pw")).await.unwrap();
    fake.set_pod_status(NS, &object_name(id), ready_status("127.0.0.4"));
    fake.delete_pod(NS, &object_name(id), true);
    assert_eq!(next_event(&mut events, failed_of(id)).await, "the data plane pod was deleted from outside Cake");
    rt.shutdown().await;
}

#[tokio::test]
async fn a_410_gone_on_the_watch_relists_and_notices_pods_deleted_meanwhile() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let rt = KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap();
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
    assert_eq!(
        next_event(&mut events, failed_of(id)).await,
        "the data plane pod disappeared (deleted from outside Cake)"
    );
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
    let sessions = Sessions::default();
    let rt = KubeRuntime::start(settings(&fake, "replica-a"), Arc::new(sessions.clone())).await.unwrap();
    let id = sessions.add(Status::Provisioning);
    let name = object_name(id);
    fake.fail_next("PATCH", &format!("/pods/{name}"), 409);
    fake.fail_next("PATCH", &format!("/pods/{name}"), 500);
    fake.fail_next("PATCH", &format!("/secrets/{name}"), 500);
    let handle = rt.provision(spec(id, "pw")).await.unwrap();
    assert_eq!(
        writes(&fake.calls().await),
        [
            format!("PATCH /api/v1/namespaces/{NS}/pods/{name}"),
            format!("PATCH /api/v1/namespaces/{NS}/pods/{name}"),
            format!("PATCH /api/v1/namespaces/{NS}/pods/{name}"),
            format!("PATCH /api/v1/namespaces/{NS}/secrets/{name}"),
            format!("PATCH /api/v1/namespaces/{NS}/secrets/{name}"),
        ],
        "409 and 500 answers were retried until the apply succeeded"
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

    // A write that keeps failing gives up after the bounded attempts, with the API's answer.
    let other = sessions.add(Status::Provisioning);
    for _ in 0..3 {
        fake.fail_next("PATCH", &format!("/pods/{}", object_name(other)), 500);
    }
    let err = rt.provision(spec(other, "pw")).await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    rt.shutdown().await;
}

#[tokio::test]
async fn the_lease_holder_deletes_orphan_pods_and_fails_sessions_whose_pods_vanished() {
    let fake = FakeKube::start().await;
    let sessions = Sessions::default();
    let vanished = sessions.add(Status::Ready);
    let failed = sessions.add(Status::Failed);
    let healthy = sessions.add(Status::Ready);
    let orphan = SessionId(uuid::Uuid::new_v4());
    for id in [failed, healthy, orphan] {
        fake.insert("pods", NS, foreign_pod(id, "Running"));
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
    assert_eq!(
        next_event(&mut events, failed_of(vanished)).await,
        "the data plane pod is gone (deleted from outside Cake)"
    );
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
    assert!(fake.pod(NS, &name(failed)).is_none());
    assert!(fake.pod(NS, &name(healthy)).is_some(), "a ready session's pod stays");
    let lease = fake.lease("default", "cake-agents-reconciler").expect("the lease was taken");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 30);
    // Renewed with the version it read (optimistic concurrency), not recreated.
    fake.wait_for_requests("a lease renewal", WAIT, |reqs| {
        reqs.iter().any(|r| {
            r.method.as_str() == "PUT"
                && r.url.path() == "/apis/coordination.k8s.io/v1/namespaces/default/leases/cake-agents-reconciler"
        })
    })
    .await;
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
    fake.insert(
        "leases",
        "default",
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "cake-agents-reconciler"},
               "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 30,
                        "renewTime": "2030-01-01T00:00:00.000000Z", "acquireTime": "2030-01-01T00:00:00.000000Z"}}),
    );
    let mut s = settings(&fake, "replica-a");
    s.reconcile_interval = Duration::from_millis(300);
    let rt = KubeRuntime::start(s, Arc::new(sessions.clone())).await.unwrap();
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/cake-agents-reconciler";
    fake.wait_for_requests("the follower to read the lease a few times", WAIT, |reqs| {
        reqs.iter().filter(|r| r.method.as_str() == "GET" && r.url.path() == lease_path).count() >= 4
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
