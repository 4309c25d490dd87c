//! The [`SessionRuntime`] on Kubernetes and its pod watcher (see the module docs of
//! [`super`] for the design).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cake_core::ports::{Endpoint, RuntimeEvent, RuntimeSpec, SessionRepository, SessionRuntime};
use cake_core::session::SessionId;
use cake_core::{CoreError, Result};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as pod_watcher};
use kube::{Api, Client};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::KubeSettings;
use super::resources::{self, FIELD_MANAGER, OPENCODE_PORT, PASSWORD_KEY, SESSION_LABEL, object_name};
use super::status::{PodView, assess, terminated};

/// Where a pod learns its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Longest wait between two attempts of an API write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Why the Kubernetes runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeStartError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// No credentials or no API server.
    #[error("cannot connect to Kubernetes: {0}")]
    Client(String),
}

/// What is persisted about a session's pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handle {
    kind: String,
    session_id: uuid::Uuid,
    namespace: String,
    pod: String,
    uid: String,
}

fn parse_handle(v: &serde_json::Value) -> Result<Handle> {
    serde_json::from_value::<Handle>(v.clone())
        .ok()
        .filter(|h| h.kind == "kubernetes")
        .ok_or_else(|| CoreError::internal("not a Kubernetes runtime handle"))
}

/// The last thing the watcher knows about a session's pod.
#[derive(Debug, Clone)]
struct Tracked {
    uid: String,
    view: PodView,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The session a pod belongs to, from its label.
pub(crate) fn session_of(pod: &Pod) -> Option<SessionId> {
    let labels = pod.metadata.labels.as_ref()?;
    labels.get(SESSION_LABEL).and_then(|v| uuid::Uuid::parse_str(v).ok()).map(SessionId)
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() { status.reason.clone() } else { status.message.clone() };
            format!("{} {message}", status.code)
        }
        other => other.to_string(),
    }
}

/// Whether an API error may go away when the same request is sent again.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 409 || status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// State shared by the runtime, its watcher and its reconciler.
pub(crate) struct Inner {
    pub(crate) settings: KubeSettings,
    /// The session namespace.
    pub(crate) namespace: String,
    /// The control plane's own namespace (where the reconciler Lease lives).
    pub(crate) lease_namespace: String,
    /// This replica's name in the Lease.
    pub(crate) identity: String,
    pub(crate) client: Client,
    tracked: Mutex<HashMap<SessionId, Tracked>>,
    changed: watch::Sender<u64>,
    passwords: Mutex<HashMap<SessionId, SecretString>>,
    events: broadcast::Sender<RuntimeEvent>,
    http: reqwest::Client,
}

impl Inner {
    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets_in(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(crate) fn emit(&self, event: RuntimeEvent) {
        let _ = self.events.send(event);
    }

    /// Runs an API call, again on 409, 429, 5xx and transport errors, a bounded number of
    /// times with doubling delays.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, kube::Error>>,
    {
        let mut delay = self.settings.retry_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && attempt < self.settings.retry_attempts.max(1) => {
                    tracing::warn!(error = %describe(&e), attempt, "Kubernetes API call failed; retrying: {what}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(CoreError::Unavailable(format!("Kubernetes API: could not {what}: {}", describe(&e))));
                }
            }
        }
    }

    /// Deletes a session's Pod and Secret (each may already be gone). The Secret is deleted
    /// explicitly, not left to the garbage collector, so the session's keys are gone at once.
    pub(crate) async fn delete_objects(&self, namespace: &str, id: SessionId) -> Result<()> {
        let name = object_name(id);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let secrets = self.secrets_in(namespace);
        let dp = DeleteParams::default();
        self.retry("delete the session's pod", || async {
            match pods.delete(&name, &dp).await {
                Err(e) if not_found(&e) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await?;
        self.retry("delete the session's secret", || async {
            match secrets.delete(&name, &dp).await {
                Err(e) if not_found(&e) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await?;
        lock(&self.passwords).remove(&id);
        Ok(())
    }

    /// Records what a pod event says and tells the service when it changes a session's
    /// picture. Returns the pod's session.
    fn observe(&self, pod: &Pod) -> Option<SessionId> {
        let id = session_of(pod)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let view = assess(pod);
        let previous = lock(&self.tracked).insert(id, Tracked { uid: uid.clone(), view: view.clone() });
        if previous.is_some_and(|p| p.uid == uid && p.view == view) {
            return Some(id);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        match view {
            PodView::Progress(detail) => {
                tracing::debug!(session.id = %id, %detail, "data plane progress");
                self.emit(RuntimeEvent::Progress { session_id: id, detail });
            }
            PodView::Ready { ip } => tracing::info!(session.id = %id, pod.ip = %ip, "data plane pod is ready"),
            PodView::Failed(reason) => {
                tracing::warn!(session.id = %id, %reason, "data plane pod failed");
                self.emit(RuntimeEvent::Failed { session_id: id, reason });
            }
        }
        Some(id)
    }

    /// A session's pod is gone: its session fails (the service leaves sessions that are
    /// already failed or being deleted alone).
    fn vanished(&self, id: SessionId, uid: Option<String>, reason: &str) {
        {
            let mut tracked = lock(&self.tracked);
            let Some(current) = tracked.get(&id) else {
                // Never seen, or torn down by this replica: nobody waits for it.
                return;
            };
            let current = Some(current);
            // A delete of an older pod says nothing about the current one.
            if let (Some(cur), Some(uid)) = (current, uid.as_ref())
                && !cur.uid.is_empty()
                && &cur.uid != uid
            {
                return;
            }
            let already_failed = current.is_some_and(|c| matches!(c.view, PodView::Failed(_)));
            let uid = uid.or_else(|| current.map(|c| c.uid.clone())).unwrap_or_default();
            tracked.insert(id, Tracked { uid, view: PodView::Failed(reason.to_owned()) });
            if already_failed {
                return;
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        tracing::warn!(session.id = %id, %reason, "data plane pod vanished");
        self.emit(RuntimeEvent::Failed { session_id: id, reason: reason.to_owned() });
    }

    /// Drops what the watcher remembers of gone pods of sessions that no longer exist (a
    /// live pod stays: its session may have been created after `known` was read).
    pub(crate) fn forget_except(&self, known: &HashSet<SessionId>) {
        let mut tracked = lock(&self.tracked);
        tracked.retain(|id, t| known.contains(id) || !matches!(t.view, PodView::Failed(_)));
        lock(&self.passwords).retain(|id, _| tracked.contains_key(id));
    }

    fn view_of(&self, id: SessionId, uid: &str) -> Option<PodView> {
        lock(&self.tracked).get(&id).filter(|t| uid.is_empty() || t.uid == uid).map(|t| t.view.clone())
    }

    /// The session's OpenCode password: remembered from provisioning, else read from its
    /// Secret (another replica provisioned it, or this one restarted).
    async fn password(&self, namespace: &str, id: SessionId) -> Result<SecretString> {
        if let Some(p) = lock(&self.passwords).get(&id).cloned() {
            return Ok(p);
        }
        let secrets = self.secrets_in(namespace);
        let name = object_name(id);
        let secret = self.retry("read the session's secret", || secrets.get_opt(&name)).await?;
        let password = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(PASSWORD_KEY).map(|b| b.0.clone()))
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| CoreError::Unavailable("the session's secret is missing its OpenCode password".into()))?;
        let password = SecretString::from(password);
        lock(&self.passwords).insert(id, password.clone());
        Ok(password)
    }

    fn endpoint_at(ip: &str, password: SecretString) -> Endpoint {
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() };
        Endpoint { base_url: format!("http://{host}:{OPENCODE_PORT}"), username: "opencode".into(), password }
    }
}

/// Follows every data-plane pod of the installation for the life of the control plane.
async fn watch_pods(inner: Arc<Inner>) {
    let config = watcher::Config::default().labels(&resources::selector(&inner.settings.instance));
    let mut stream = pod_watcher(inner.pods(), config).default_backoff().boxed();
    // Sessions seen during a (re)list; `None` outside one.
    let mut listing: Option<HashSet<SessionId>> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init) => listing = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(id), Some(seen)) = (inner.observe(&pod), listing.as_mut()) {
                    seen.insert(id);
                }
            }
            Ok(Event::InitDone) => {
                let seen = listing.take().unwrap_or_default();
                // Pods known before the relist but missing from it were deleted meanwhile
                // (e.g. while the watch was broken and answered 410 Gone).
                let missing: Vec<(SessionId, String)> = lock(&inner.tracked)
                    .iter()
                    .filter(|(id, t)| !seen.contains(id) && !matches!(t.view, PodView::Failed(_)))
                    .map(|(id, t)| (*id, t.uid.clone()))
                    .collect();
                for (id, uid) in missing {
                    inner.vanished(id, Some(uid), "the data plane pod disappeared (deleted from outside Cake)");
                }
            }
            Ok(Event::Apply(pod)) => {
                inner.observe(&pod);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(id) = session_of(&pod) {
                    inner.vanished(id, pod.metadata.uid.clone(), "the data plane pod was deleted from outside Cake");
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching data-plane pods failed; retrying"),
        }
    }
}

/// Runs one OpenCode pod per session in a Kubernetes namespace.
pub struct KubeRuntime {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl KubeRuntime {
    /// Connects (in-cluster credentials when running in a pod, else `KUBECONFIG`, or the
    /// settings' API URL), starts the pod watcher and the reconciler.
    pub async fn start(
        settings: KubeSettings,
        sessions: Arc<dyn SessionRepository>,
    ) -> std::result::Result<Self, KubeStartError> {
        if settings.image.trim().is_empty() || settings.init_image.trim().is_empty() {
            return Err(KubeStartError::Config(
                "CAKE_DATA_PLANE_IMAGE and CAKE_DATA_PLANE_INIT_IMAGE are required with CAKE_RUNTIME=kubernetes".into(),
            ));
        }
        let (config, own_namespace) = match &settings.api_url {
            Some(url) => {
                let uri = url.parse().map_err(|e| KubeStartError::Config(format!("API server URL {url:?}: {e}")))?;
                let config = kube::Config::new(uri);
                let ns = config.default_namespace.clone();
                (config, ns)
            }
            None => {
                let config = kube::Config::infer().await.map_err(|e| KubeStartError::Client(e.to_string()))?;
                let ns = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| config.default_namespace.clone());
                (config, ns)
            }
        };
        let client = Client::try_from(config).map_err(|e| KubeStartError::Client(e.to_string()))?;
        let namespace = settings.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| own_namespace.clone());
        let identity = settings.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "cake".into());
            format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| KubeStartError::Client(e.to_string()))?;
        tracing::info!(namespace = %namespace, instance = %settings.instance, identity = %identity, "Kubernetes runtime");
        let inner = Arc::new(Inner {
            settings,
            namespace,
            lease_namespace: own_namespace,
            identity,
            client,
            tracked: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            passwords: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
            http,
        });
        let tasks =
            vec![tokio::spawn(watch_pods(inner.clone())), tokio::spawn(super::reconcile::run(inner.clone(), sessions))];
        Ok(Self { inner, tasks: Mutex::new(tasks) })
    }

    /// The namespace session pods run in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Stops watching and reconciling and hands the reconciler Lease on (session pods keep
    /// running: every replica serves every session, and a restarted one finds them again).
    pub async fn shutdown(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), super::reconcile::release(&self.inner)).await;
    }

    async fn apply_pod(&self, spec: &RuntimeSpec) -> Result<Pod> {
        let pods = self.inner.pods();
        let name = object_name(spec.session_id);
        let body = resources::pod(&self.inner.settings, &self.inner.namespace, spec);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        self.inner.retry("create the session's pod", || pods.patch(&name, &params, &patch)).await
    }

    async fn ensure_secret(&self, spec: &RuntimeSpec, pod_uid: &str) -> Result<()> {
        let id = spec.session_id;
        let name = object_name(id);
        let secrets = self.inner.secrets_in(&self.inner.namespace);
        let existing = self.inner.retry("read the session's secret", || secrets.get_opt(&name)).await?;
        let owned = existing.as_ref().is_some_and(|s| {
            s.metadata.owner_references.as_ref().is_some_and(|refs| refs.iter().any(|r| r.uid == pod_uid))
        });
        if owned {
            // A retried provision: the pod reads this Secret already; keep its password.
            lock(&self.inner.passwords).remove(&id);
            self.inner.password(&self.inner.namespace, id).await?;
            return Ok(());
        }
        let body = resources::secret(&self.inner.settings.instance, &self.inner.namespace, spec, pod_uid);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        self.inner.retry("create the session's secret", || secrets.patch(&name, &params, &patch)).await?;
        lock(&self.inner.passwords).insert(id, spec.password.clone());
        Ok(())
    }

    /// Polls OpenCode's health route at a ready pod until it answers (a TCP probe only says
    /// the port is open), or the pod fails, or time runs out.
    async fn probe(&self, handle: &Handle, ip: &str, deadline: tokio::time::Instant) -> Result<Endpoint> {
        let id = SessionId(handle.session_id);
        let password = self.inner.password(&handle.namespace, id).await?;
        let endpoint = Inner::endpoint_at(ip, password);
        let url = format!("{}/global/health", endpoint.base_url);
        loop {
            let answer = self
                .inner
                .http
                .get(&url)
                .basic_auth(&endpoint.username, Some(endpoint.password.expose_secret()))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => return Ok(endpoint),
                Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                    return Err(CoreError::Unavailable(
                        "OpenCode in the session's pod refused the session's password".into(),
                    ));
                }
                _ => {}
            }
            if let Some(PodView::Failed(reason)) = self.inner.view_of(id, &handle.uid) {
                return Err(CoreError::Unavailable(reason));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CoreError::Unavailable(format!(
                    "OpenCode in the session's pod did not answer at {} within {} s",
                    endpoint.base_url,
                    self.inner.settings.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[async_trait]
impl SessionRuntime for KubeRuntime {
    #[tracing::instrument(name = "provision_runtime", skip_all, fields(session.id = %spec.session_id))]
    async fn provision(&self, spec: RuntimeSpec) -> Result<serde_json::Value> {
        let id = spec.session_id;
        let name = object_name(id);
        let previous = spec.previous.as_ref().and_then(|p| parse_handle(p).ok());
        let pods = self.inner.pods();
        let existing = self.inner.retry("read the session's pod", || pods.get_opt(&name)).await?;
        let pod = match existing {
            Some(pod) => {
                if pod.metadata.deletion_timestamp.is_some() || terminated(&pod) {
                    let why = match assess(&pod) {
                        PodView::Failed(reason) => reason,
                        _ => "it is being deleted".into(),
                    };
                    return Err(CoreError::Unavailable(format!("the session's pod has ended: {why}")));
                }
                if let Some(prev) = &previous
                    && prev.uid != pod.metadata.uid.clone().unwrap_or_default()
                {
                    return Err(CoreError::Unavailable(
                        "the session's pod was replaced; its workspace and OpenCode history are gone".into(),
                    ));
                }
                pod
            }
            None if previous.is_some() => {
                return Err(CoreError::Unavailable(
                    "the session's pod no longer exists; its workspace and OpenCode history went with it".into(),
                ));
            }
            None => self.apply_pod(&spec).await?,
        };
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| CoreError::Unavailable("the Kubernetes API returned a pod without uid".into()))?;
        self.ensure_secret(&spec, &uid).await?;
        self.inner.observe(&pod);
        let handle = Handle {
            kind: "kubernetes".into(),
            session_id: id.0,
            namespace: self.inner.namespace.clone(),
            pod: name,
            uid,
        };
        serde_json::to_value(handle).map_err(CoreError::internal)
    }

    async fn wait_ready(&self, handle: &serde_json::Value) -> Result<Endpoint> {
        let h = parse_handle(handle)?;
        let id = SessionId(h.session_id);
        let deadline = tokio::time::Instant::now() + self.inner.settings.ready_timeout;
        let mut changes = self.inner.changed.subscribe();
        let mut last = "the pod was created".to_owned();
        loop {
            changes.borrow_and_update();
            match self.inner.view_of(id, &h.uid) {
                Some(PodView::Ready { ip }) => return self.probe(&h, &ip, deadline).await,
                Some(PodView::Failed(reason)) => return Err(CoreError::Unavailable(reason)),
                Some(PodView::Progress(step)) => last = step,
                None => {}
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(CoreError::Unavailable("the pod watcher stopped".into())),
                Err(_) => {
                    return Err(CoreError::Unavailable(format!(
                        "the session's pod did not become ready within {} s (last step: {last})",
                        self.inner.settings.ready_timeout.as_secs()
                    )));
                }
            }
        }
    }

    async fn endpoint(&self, handle: &serde_json::Value) -> Result<Option<Endpoint>> {
        let h = parse_handle(handle)?;
        let id = SessionId(h.session_id);
        let ip = match self.inner.view_of(id, &h.uid) {
            Some(PodView::Ready { ip }) => Some(ip),
            Some(_) => None,
            None => {
                // Not seen by this replica's watcher yet: ask the API.
                let pods: Api<Pod> = Api::namespaced(self.inner.client.clone(), &h.namespace);
                let pod = self.inner.retry("read the session's pod", || pods.get_opt(&h.pod)).await?;
                match pod.filter(|p| p.metadata.uid.as_deref() == Some(h.uid.as_str())).map(|p| assess(&p)) {
                    Some(PodView::Ready { ip }) => Some(ip),
                    _ => None,
                }
            }
        };
        match ip {
            Some(ip) => Ok(Some(Inner::endpoint_at(&ip, self.inner.password(&h.namespace, id).await?))),
            None => Ok(None),
        }
    }

    /// Deletes a pod that still runs (a failed session must not keep using resources). One
    /// that has ended is kept, with its Secret, until the session is deleted, so
    /// `kubectl logs` and `kubectl describe` can still explain the failure.
    async fn stop(&self, session_id: SessionId) -> Result<()> {
        let pods = self.inner.pods();
        let name = object_name(session_id);
        let pod = self.inner.retry("read the session's pod", || pods.get_opt(&name)).await?;
        match pod {
            Some(pod) if !terminated(&pod) => self.inner.delete_objects(&self.inner.namespace, session_id).await,
            _ => Ok(()),
        }
    }

    #[tracing::instrument(name = "teardown_runtime", skip_all, fields(session.id = %session_id))]
    async fn teardown(&self, session_id: SessionId, handle: Option<serde_json::Value>) -> Result<()> {
        let namespace = handle
            .as_ref()
            .and_then(|h| parse_handle(h).ok())
            .map(|h| h.namespace)
            .unwrap_or_else(|| self.inner.namespace.clone());
        self.inner.delete_objects(&namespace, session_id).await?;
        lock(&self.inner.tracked).remove(&session_id);
        Ok(())
    }

    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        tokio_stream::wrappers::BroadcastStream::new(self.inner.events.subscribe())
            .filter_map(|r| futures::future::ready(r.ok()))
            .boxed()
    }

    async fn health(&self) -> Result<()> {
        let params = ListParams::default().labels(&resources::selector(&self.inner.settings.instance)).limit(1);
        self.inner
            .pods()
            .list(&params)
            .await
            .map(|_| ())
            .map_err(|e| CoreError::Unavailable(format!("Kubernetes API: cannot list pods: {}", describe(&e))))
    }
}
