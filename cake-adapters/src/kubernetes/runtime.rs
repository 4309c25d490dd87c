//! The [`SessionRuntime`] on Kubernetes and its pod watcher (see the module docs of
//! [`super`] for the design).

use std::collections::{HashMap, HashSet};
use std::fmt;
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
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as pod_watcher};
use kube::{Api, Client};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::KubeSettings;
use super::resources::{self, FIELD_MANAGER, OPENCODE_PORT, PASSWORD_KEY, SESSION_LABEL, object_name};
use super::status::{DELETED_FROM_OUTSIDE, PodView, assess, terminated};

/// Where a pod learns its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Longest wait between two attempts of an API call.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Runtime events kept for a consumer that is not reading (yet).
const EVENT_BUFFER: usize = 1024;
/// How long the watcher remembers a failed or deleted pod: long enough for anyone waiting
/// on it (`wait_ready`, a late delete event) to learn it failed, not forever.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// How long a session pod's IP is remembered after it was last seen (a deleted pod's code runs
/// on through its termination grace period).
const POD_IP_MEMORY: Duration = Duration::from_secs(600);

/// Every address of a pod (`status.podIPs`, else `status.podIP`).
fn pod_ips(pod: &Pod) -> Vec<std::net::IpAddr> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let mut ips: Vec<std::net::IpAddr> = status.pod_ips.iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    ips
}
/// Reads and writes of a session's Secret before giving up when it keeps changing.
const SECRET_ATTEMPTS: usize = 4;

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
    /// The pod's `resourceVersion` when it was seen (`None`: not a number), so an older copy
    /// (a provision's answer arriving after a newer watch event) does not overwrite it.
    version: Option<u64>,
    /// What it means for the session: progress, ready or failed (never `Waiting`: that is
    /// progress until the grace runs out, see `trouble`).
    view: PodView,
    /// Since when the pod has been held up by something that usually heals, and the reason
    /// its session fails with if that lasts past the pending grace.
    trouble: Option<(Instant, String)>,
    /// When the pod failed or was deleted (a tombstone, dropped after [`TOMBSTONE_TTL`]).
    ended_at: Option<Instant>,
    /// The pod's IPs (every address of a dual-stack pod) once it has them: requests from
    /// them come from session code.
    ips: Vec<std::net::IpAddr>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The session a pod belongs to, from its label.
pub(crate) fn session_of(pod: &Pod) -> Option<SessionId> {
    let labels = pod.metadata.labels.as_ref()?;
    labels.get(SESSION_LABEL).and_then(|v| uuid::Uuid::parse_str(v).ok()).map(SessionId)
}

/// A pod's `resourceVersion` as a number (etcd's revision; `None` if the API server uses
/// something else, and then observations are not ordered).
fn resource_version(pod: &Pod) -> Option<u64> {
    pod.metadata.resource_version.as_deref().and_then(|v| v.parse().ok())
}

pub(crate) fn describe(e: &kube::Error) -> String {
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

/// `409`: `AlreadyExists` on a create, `Conflict` on a replace with an outdated version.
fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// One failed attempt of an API call.
enum Failure {
    Api(kube::Error),
    /// No answer in time (a half-open connection, an overloaded API server).
    Timeout(Duration),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Api(e) => retryable(e),
            Failure::Timeout(_) => true,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Api(e) => f.write_str(&describe(e)),
            Failure::Timeout(t) => write!(f, "no answer within {} s", t.as_secs_f32()),
        }
    }
}

/// The OpenCode password in a session's Secret.
fn password_in(secret: &Secret) -> Option<SecretString> {
    let bytes = secret.data.as_ref()?.get(PASSWORD_KEY)?.0.clone();
    String::from_utf8(bytes).ok().map(SecretString::from)
}

fn owned_by(secret: &Secret, pod_uid: &str) -> bool {
    secret.metadata.owner_references.as_ref().is_some_and(|refs| refs.iter().any(|r| r.uid == pod_uid))
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
    /// Session pod IPs and when they were last seen (see [`Inner::is_pod_ip`]).
    recent_ips: Mutex<HashMap<std::net::IpAddr, Instant>>,
    events: broadcast::Sender<RuntimeEvent>,
    /// Subscribed before the watcher and the reconciler start, so what they report before
    /// the service asks for [`SessionRuntime::events`] is kept for it.
    first_events: Mutex<Option<broadcast::Receiver<RuntimeEvent>>>,
    http: reqwest::Client,
}

impl Inner {
    fn new(
        settings: KubeSettings,
        client: Client,
        namespace: String,
        lease_namespace: String,
        identity: String,
        http: reqwest::Client,
        event_buffer: usize,
    ) -> Self {
        let (events, first) = broadcast::channel(event_buffer.max(1));
        Self {
            settings,
            namespace,
            lease_namespace,
            identity,
            client,
            tracked: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            passwords: Mutex::new(HashMap::new()),
            recent_ips: Mutex::new(HashMap::new()),
            events,
            first_events: Mutex::new(Some(first)),
            http,
        }
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets_in(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(crate) fn emit(&self, event: RuntimeEvent) {
        let _ = self.events.send(event);
    }

    /// How long a pod may be held up by what usually heals before its session fails.
    fn grace(&self) -> Duration {
        self.settings.pending_grace.min(self.settings.ready_timeout)
    }

    /// Runs an API call, again on 409, 429, 5xx, transport errors and attempts that get no
    /// answer within the API timeout, a bounded number of times with doubling delays.
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, kube::Error>>,
    {
        let mut delay = self.settings.retry_delay;
        let mut attempt = 1;
        let timeout = self.settings.api_timeout;
        loop {
            let outcome = match tokio::time::timeout(timeout, op()).await {
                Ok(answer) => answer.map_err(Failure::Api),
                Err(_) => Err(Failure::Timeout(timeout)),
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < self.settings.retry_attempts.max(1) => {
                    tracing::warn!(error = %e, attempt, "Kubernetes API call failed; retrying: {what}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(CoreError::Unavailable(format!("Kubernetes API: could not {what}: {e}")));
                }
            }
        }
    }

    async fn delete_pod(&self, namespace: &str, id: SessionId) -> Result<()> {
        let name = object_name(id);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let dp = DeleteParams::default();
        self.retry("delete the session's pod", || async {
            match pods.delete(&name, &dp).await {
                Err(e) if not_found(&e) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await
    }

    /// Deletes a session's Secret (it may already be gone) and forgets its password.
    pub(crate) async fn delete_secret(&self, namespace: &str, id: SessionId) -> Result<()> {
        let name = object_name(id);
        let secrets = self.secrets_in(namespace);
        let dp = DeleteParams::default();
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

    /// Deletes a session's Pod and Secret (each may already be gone). The Secret is deleted
    /// explicitly, not left to the garbage collector, so the session's keys are gone at once.
    pub(crate) async fn delete_objects(&self, namespace: &str, id: SessionId) -> Result<()> {
        self.delete_pod(namespace, id).await?;
        self.delete_secret(namespace, id).await
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records what a pod event says and tells the service when it changes a session's
    /// picture. Returns the pod's session.
    fn observe(&self, pod: &Pod) -> Option<SessionId> {
        let id = session_of(pod)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ips = pod_ips(pod);
        if !ips.is_empty() {
            let mut recent = lock(&self.recent_ips);
            for ip in &ips {
                recent.insert(*ip, Instant::now());
            }
        }
        let version = resource_version(pod);
        let assessed = assess(pod);
        let now = Instant::now();
        let grace = self.grace();
        let news = {
            let mut tracked = lock(&self.tracked);
            let previous = tracked.get_mut(&id).filter(|p| p.uid == uid);
            let mut trouble_since = None;
            let mut previous_view = None;
            let mut previous_ips = Vec::new();
            if let Some(p) = previous {
                previous_ips = p.ips.clone();
                if let (Some(new), Some(old)) = (version, p.version)
                    && new < old
                {
                    // An older copy (a provision's answer overtaken by a watch event).
                    return Some(id);
                }
                if matches!(p.view, PodView::Failed(_)) {
                    // A failure once reported is not taken back (nor reported again).
                    p.version = version.or(p.version);
                    return Some(id);
                }
                trouble_since = p.trouble.as_ref().map(|(since, _)| *since);
                previous_view = Some(p.view.clone());
            }
            let (view, trouble) = match assessed {
                PodView::Waiting { detail, failure } => {
                    let since = trouble_since.unwrap_or(now);
                    if now.saturating_duration_since(since) >= grace {
                        (PodView::Failed(failure), None)
                    } else {
                        (PodView::Progress(detail), Some((since, failure)))
                    }
                }
                other => (other, None),
            };
            let ended_at = matches!(view, PodView::Failed(_)).then_some(now);
            let news = (previous_view.as_ref() != Some(&view)).then(|| view.clone());
            let ips = if ips.is_empty() { previous_ips } else { ips };
            tracked.insert(id, Tracked { uid, version, view, trouble, ended_at, ips });
            news
        };
        if let Some(view) = news {
            self.report(id, view);
        }
        Some(id)
    }

    /// Tells waiters and the service about a session's new picture.
    fn report(&self, id: SessionId, view: PodView) {
        self.notify();
        match view {
            PodView::Progress(detail) | PodView::Waiting { detail, .. } => {
                tracing::debug!(session.id = %id, %detail, "data plane progress");
                self.emit(RuntimeEvent::Progress { session_id: id, detail });
            }
            PodView::Ready { ip } => tracing::info!(session.id = %id, pod.ip = %ip, "data plane pod is ready"),
            PodView::Failed(reason) => {
                tracing::warn!(session.id = %id, %reason, "data plane pod failed");
                self.emit(RuntimeEvent::Failed { session_id: id, reason });
            }
        }
    }

    /// A session's pod is gone: its session fails (the service leaves sessions that are
    /// already failed or being deleted alone).
    fn vanished(&self, id: SessionId, uid: Option<&str>, reason: &str) {
        {
            let mut tracked = lock(&self.tracked);
            let Some(current) = tracked.get_mut(&id) else {
                // Never seen, or torn down by this replica: nobody waits for it.
                return;
            };
            // A delete of an older pod says nothing about the current one.
            if let Some(uid) = uid
                && !current.uid.is_empty()
                && current.uid != uid
            {
                return;
            }
            if matches!(current.view, PodView::Failed(_)) {
                return;
            }
            current.view = PodView::Failed(reason.to_owned());
            current.trouble = None;
            current.ended_at = Some(Instant::now());
        }
        self.notify();
        tracing::warn!(session.id = %id, %reason, "data plane pod vanished");
        self.emit(RuntimeEvent::Failed { session_id: id, reason: reason.to_owned() });
    }

    /// Whether `ip` is, or within [`POD_IP_MEMORY`] was, the address of one of this
    /// installation's session pods (tracked pods in any state, and pods deleted or forgotten
    /// lately: a deleted pod runs on through its grace period).
    fn is_pod_ip(&self, ip: std::net::IpAddr) -> bool {
        if lock(&self.tracked).values().any(|t| t.ips.contains(&ip)) {
            return true;
        }
        lock(&self.recent_ips).get(&ip).is_some_and(|seen| seen.elapsed() < POD_IP_MEMORY)
    }

    /// The pods tracked as alive (not failed), by session, with their uids.
    fn alive(&self) -> HashMap<SessionId, String> {
        lock(&self.tracked)
            .iter()
            .filter(|(_, t)| !matches!(t.view, PodView::Failed(_)))
            .map(|(id, t)| (*id, t.uid.clone()))
            .collect()
    }

    /// Work every replica does on every tick, leader or not: a pod held up past the pending
    /// grace fails its session (no pod event may come to say so), and what is remembered of
    /// failed and deleted pods — and their passwords — is dropped after a while, so the maps
    /// do not grow with every session ever seen.
    pub(crate) fn housekeeping(&self) {
        let now = Instant::now();
        let grace = self.grace();
        let mut failed = Vec::new();
        {
            let mut tracked = lock(&self.tracked);
            for (id, t) in tracked.iter_mut() {
                if t.trouble.as_ref().is_some_and(|(since, _)| now.saturating_duration_since(*since) >= grace)
                    && let Some((_, failure)) = t.trouble.take()
                {
                    t.view = PodView::Failed(failure.clone());
                    t.ended_at = Some(now);
                    failed.push((*id, failure));
                }
            }
            tracked.retain(|_, t| t.ended_at.is_none_or(|at| now.saturating_duration_since(at) < TOMBSTONE_TTL));
            lock(&self.passwords).retain(|id, _| tracked.get(id).is_some_and(|t| t.ended_at.is_none()));
        }
        lock(&self.recent_ips).retain(|_, seen| now.saturating_duration_since(*seen) < POD_IP_MEMORY);
        for (id, reason) in failed {
            self.report(id, PodView::Failed(reason));
        }
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

    /// A failure for every session whose pod is known to have failed (sent again to a
    /// consumer that missed events).
    fn current_failures(&self) -> Vec<RuntimeEvent> {
        lock(&self.tracked)
            .iter()
            .filter_map(|(id, t)| match &t.view {
                PodView::Failed(reason) => Some(RuntimeEvent::Failed { session_id: *id, reason: reason.clone() }),
                _ => None,
            })
            .collect()
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
            .as_ref()
            .and_then(password_in)
            .ok_or_else(|| CoreError::Unavailable("the session's secret is missing its OpenCode password".into()))?;
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
    // During a (re)list: the pods alive when it began (the watcher emits `Init` before it
    // sends the list request), and the sessions the list showed. A pod created after the
    // list began is not in the first set, so missing from the list says nothing about it.
    let mut listing: Option<(HashMap<SessionId, String>, HashSet<SessionId>)> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init) => listing = Some((inner.alive(), HashSet::new())),
            Ok(Event::InitApply(pod)) => {
                if let (Some(id), Some((_, seen))) = (inner.observe(&pod), listing.as_mut()) {
                    seen.insert(id);
                }
            }
            Ok(Event::InitDone) => {
                let (before, seen) = listing.take().unwrap_or_default();
                // Pods alive before the relist but missing from it were deleted meanwhile
                // (e.g. while the watch was broken and answered 410 Gone).
                for (id, uid) in before {
                    if !seen.contains(&id) {
                        inner.vanished(id, Some(&uid), DELETED_FROM_OUTSIDE);
                    }
                }
            }
            Ok(Event::Apply(pod)) => {
                inner.observe(&pod);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(id) = session_of(&pod) {
                    inner.vanished(id, pod.metadata.uid.as_deref(), DELETED_FROM_OUTSIDE);
                    // Its Secret goes with it (owned by the pod).
                    lock(&inner.passwords).remove(&id);
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

impl Drop for KubeRuntime {
    /// Stops the watcher and the reconciler (a runtime dropped without [`Self::shutdown`],
    /// e.g. when the control plane fails to build after starting it, must not keep
    /// reconciling, nor holding the Lease, in the background).
    fn drop(&mut self) {
        for task in self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }
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
        let inner = Arc::new(Inner::new(settings, client, namespace, own_namespace, identity, http, EVENT_BUFFER));
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

    /// Makes sure the session's Secret exists, owned by the pod `pod_uid`, and remembers the
    /// password OpenCode in that pod reads from it. The Secret is created (`POST`), never
    /// blindly overwritten: of two replicas provisioning the same session, one creates it and
    /// the other gets `409 AlreadyExists`, reads it, and adopts its password (the pod's
    /// OpenCode reads that one). A Secret left by an earlier pod of the same name (its owner
    /// gone, the garbage collector not yet done) is replaced with the version read.
    async fn ensure_secret(&self, spec: &RuntimeSpec, pod_uid: &str) -> Result<()> {
        let id = spec.session_id;
        let name = object_name(id);
        let secrets = self.inner.secrets_in(&self.inner.namespace);
        let body: Secret = serde_json::from_value(resources::secret(
            &self.inner.settings.instance,
            &self.inner.namespace,
            spec,
            pod_uid,
        ))
        .map_err(CoreError::internal)?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PostParams::default() };
        for _ in 0..SECRET_ATTEMPTS {
            let existing = self.inner.retry("read the session's secret", || secrets.get_opt(&name)).await?;
            let written = match existing {
                Some(secret) if owned_by(&secret, pod_uid) => {
                    // Created by another replica, or by an earlier attempt: the pod reads it.
                    let password = password_in(&secret).ok_or_else(|| {
                        CoreError::Unavailable("the session's secret is missing its OpenCode password".into())
                    })?;
                    lock(&self.inner.passwords).insert(id, password);
                    return Ok(());
                }
                Some(stale) => {
                    let mut body = body.clone();
                    body.metadata.resource_version = stale.metadata.resource_version.clone();
                    self.inner
                        .retry("replace the session's secret", || async {
                            match secrets.replace(&name, &params, &body).await {
                                Ok(_) => Ok(true),
                                Err(e) if conflict(&e) || not_found(&e) => Ok(false),
                                Err(e) => Err(e),
                            }
                        })
                        .await?
                }
                None => {
                    self.inner
                        .retry("create the session's secret", || async {
                            match secrets.create(&params, &body).await {
                                Ok(_) => Ok(true),
                                Err(e) if conflict(&e) => Ok(false),
                                Err(e) => Err(e),
                            }
                        })
                        .await?
                }
            };
            if written {
                lock(&self.inner.passwords).insert(id, spec.password.clone());
                return Ok(());
            }
            // Someone else wrote it in between: read it again.
        }
        Err(CoreError::Unavailable("the session's secret kept changing while it was being created".into()))
    }

    /// Polls OpenCode's health route at a ready pod until it answers (a TCP probe only says
    /// the port is open), or the pod fails, or time runs out.
    async fn probe(&self, handle: &Handle, ip: &str, deadline: Instant) -> Result<Endpoint> {
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
            if Instant::now() >= deadline {
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
    fn is_data_plane_address(&self, ip: std::net::IpAddr) -> bool {
        self.inner.is_pod_ip(ip)
    }

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
        let now = Instant::now();
        let deadline = now.checked_add(self.inner.settings.ready_timeout).unwrap_or(now + Duration::from_secs(3600));
        let mut changes = self.inner.changed.subscribe();
        let mut last = "the pod was created".to_owned();
        loop {
            changes.borrow_and_update();
            match self.inner.view_of(id, &h.uid) {
                Some(PodView::Ready { ip }) => return self.probe(&h, &ip, deadline).await,
                Some(PodView::Failed(reason)) => return Err(CoreError::Unavailable(reason)),
                Some(PodView::Progress(step) | PodView::Waiting { detail: step, .. }) => last = step,
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

    /// After a session failed: a pod that failed itself (pending, pulling, crashing, never
    /// ready) is deleted with its Secret — it would only hold resources. A pod that is still
    /// ready is kept, Secret and all: what failed was the connection to OpenCode, and its
    /// workspace (an emptyDir) is the session's work; it goes when the session is deleted. A
    /// pod that has ended is kept until the session is deleted, so `kubectl logs` and
    /// `kubectl describe` can still explain the failure, but its Secret (the provider keys)
    /// is deleted at once.
    async fn stop(&self, session_id: SessionId) -> Result<()> {
        let pods = self.inner.pods();
        let name = object_name(session_id);
        let namespace = &self.inner.namespace;
        let pod = self.inner.retry("read the session's pod", || pods.get_opt(&name)).await?;
        match pod {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() && !terminated(&pod) => {
                if matches!(assess(&pod), PodView::Ready { .. }) {
                    tracing::info!(session.id = %session_id, "the failed session's pod is healthy: kept with its workspace");
                    Ok(())
                } else {
                    self.inner.delete_objects(namespace, session_id).await
                }
            }
            _ => self.inner.delete_secret(namespace, session_id).await,
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

    /// Events reported since the runtime started are kept for the first caller. A consumer
    /// that falls more than the buffer behind gets the current failures again (a missed
    /// progress note does not matter; a missed failure would leave a session hanging).
    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        let receiver = lock(&self.inner.first_events).take().unwrap_or_else(|| self.inner.events.subscribe());
        let inner = self.inner.clone();
        BroadcastStream::new(receiver)
            .flat_map(move |item| {
                let events = match item {
                    Ok(event) => vec![event],
                    Err(BroadcastStreamRecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "runtime events were dropped for a slow consumer; sending the current failures again"
                        );
                        inner.current_failures()
                    }
                };
                futures::stream::iter(events)
            })
            .boxed()
    }

    async fn health(&self) -> Result<()> {
        let params = ListParams::default().labels(&resources::selector(&self.inner.settings.instance)).limit(1);
        let timeout = self.inner.settings.api_timeout;
        match tokio::time::timeout(timeout, self.inner.pods().list(&params)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(CoreError::Unavailable(format!("Kubernetes API: cannot list pods: {}", describe(&e)))),
            Err(_) => Err(CoreError::Unavailable(format!(
                "Kubernetes API: listing pods got no answer within {} s",
                timeout.as_secs_f32()
            ))),
        }
    }

    fn survives_restart(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An `Inner` whose client points nowhere (these tests make no API calls).
    fn inner(settings: KubeSettings, event_buffer: usize) -> Inner {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        Inner::new(settings, client, "ns".into(), "ns".into(), "me".into(), reqwest::Client::new(), event_buffer)
    }

    fn settings() -> KubeSettings {
        KubeSettings::for_images("cake/data-plane:1", "cake/data-plane-init:1")
    }

    fn pod(id: SessionId, uid: &str, version: u64, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": object_name(id), "uid": uid, "resourceVersion": version.to_string(),
                         "labels": {SESSION_LABEL: id.0.to_string()}},
            "spec": {"containers": [{"name": "data-plane", "image": "cake/data-plane:1"}]},
            "status": status
        }))
        .unwrap()
    }

    fn ready() -> serde_json::Value {
        json!({"phase": "Running", "podIP": "10.0.0.1",
               "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]})
    }

    fn unschedulable() -> serde_json::Value {
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
               "reason": "Unschedulable", "message": "0/3 nodes are available"}]})
    }

    fn drain(rx: &mut broadcast::Receiver<RuntimeEvent>) -> Vec<RuntimeEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn an_older_copy_of_a_pod_does_not_overwrite_a_newer_one() {
        let inner = inner(settings(), 16);
        let id = SessionId(uuid::Uuid::new_v4());
        inner.observe(&pod(id, "u1", 7, ready()));
        // A provision's answer read before the watcher's newer event.
        inner.observe(&pod(id, "u1", 5, json!({"phase": "Pending"})));
        assert_eq!(inner.view_of(id, "u1"), Some(PodView::Ready { ip: "10.0.0.1".into() }));
        // A newer one does.
        inner.observe(&pod(id, "u1", 8, json!({"phase": "Failed", "reason": "Evicted"})));
        assert!(matches!(inner.view_of(id, "u1"), Some(PodView::Failed(_))));
        // And a failure is not taken back.
        inner.observe(&pod(id, "u1", 9, ready()));
        assert!(matches!(inner.view_of(id, "u1"), Some(PodView::Failed(_))));
        // Another pod of the same session starts afresh.
        inner.observe(&pod(id, "u2", 3, ready()));
        assert_eq!(inner.view_of(id, "u2"), Some(PodView::Ready { ip: "10.0.0.1".into() }));
    }

    #[tokio::test]
    async fn what_usually_heals_is_progress_until_the_grace_runs_out() {
        let mut s = settings();
        s.pending_grace = Duration::from_millis(200);
        let inner = inner(s, 16);
        let mut rx = inner.events.subscribe();
        let id = SessionId(uuid::Uuid::new_v4());
        inner.observe(&pod(id, "u1", 1, unschedulable()));
        assert_eq!(
            drain(&mut rx),
            [RuntimeEvent::Progress { session_id: id, detail: "waiting for a node: 0/3 nodes are available".into() }]
        );
        inner.housekeeping();
        assert!(drain(&mut rx).is_empty(), "within the grace nothing fails");
        tokio::time::sleep(Duration::from_millis(250)).await;
        // No pod event comes: the tick fails it.
        inner.housekeeping();
        assert_eq!(
            drain(&mut rx),
            [RuntimeEvent::Failed {
                session_id: id,
                reason: "the pod cannot be scheduled: 0/3 nodes are available".into()
            }]
        );
        // A pod that heals within the grace never fails.
        let other = SessionId(uuid::Uuid::new_v4());
        inner.observe(&pod(other, "u2", 1, unschedulable()));
        inner.observe(&pod(other, "u2", 2, ready()));
        tokio::time::sleep(Duration::from_millis(250)).await;
        inner.housekeeping();
        assert!(!drain(&mut rx).iter().any(|e| matches!(e, RuntimeEvent::Failed { .. })));
        // The grace runs from the first sign of trouble, also across events.
        let third = SessionId(uuid::Uuid::new_v4());
        inner.observe(&pod(third, "u3", 1, unschedulable()));
        tokio::time::sleep(Duration::from_millis(250)).await;
        inner.observe(&pod(third, "u3", 2, unschedulable()));
        assert!(
            drain(&mut rx).iter().any(|e| matches!(e, RuntimeEvent::Failed { session_id, .. } if *session_id == third))
        );
    }

    #[tokio::test]
    async fn tombstones_and_passwords_do_not_accumulate() {
        let inner = inner(settings(), 16);
        let (live, gone) = (SessionId(uuid::Uuid::new_v4()), SessionId(uuid::Uuid::new_v4()));
        inner.observe(&pod(live, "u1", 1, ready()));
        inner.observe(&pod(gone, "u2", 1, ready()));
        for id in [live, gone] {
            lock(&inner.passwords).insert(id, SecretString::from("pw".to_owned()));
        }
        inner.vanished(gone, Some("u2"), DELETED_FROM_OUTSIDE);
        inner.housekeeping();
        assert!(lock(&inner.tracked).contains_key(&gone), "a tombstone stays for a while");
        assert!(!lock(&inner.passwords).contains_key(&gone), "but not the password of a gone pod");
        assert!(lock(&inner.passwords).contains_key(&live));
        // Once the tombstone is old enough it goes too, on any replica's tick.
        if let Some(t) = lock(&inner.tracked).get_mut(&gone) {
            t.ended_at = Instant::now().checked_sub(TOMBSTONE_TTL);
        }
        inner.housekeeping();
        assert!(!lock(&inner.tracked).contains_key(&gone));
        assert!(lock(&inner.tracked).contains_key(&live));
        // A late delete event of a forgotten pod does not bring it back.
        inner.vanished(gone, Some("u2"), DELETED_FROM_OUTSIDE);
        assert!(!lock(&inner.tracked).contains_key(&gone));
    }

    #[tokio::test]
    async fn events_before_the_first_consumer_are_kept_and_a_lagging_one_gets_the_failures_again() {
        let inner = Arc::new(inner(settings(), 2));
        let runtime = KubeRuntime { inner: inner.clone(), tasks: Mutex::new(Vec::new()) };
        let failed = SessionId(uuid::Uuid::new_v4());
        // Reported before anyone asked for events (the watcher starts before the service).
        inner.observe(&pod(failed, "u1", 1, json!({"phase": "Failed", "reason": "Evicted"})));
        let mut events = runtime.events();
        let first = tokio::time::timeout(Duration::from_secs(1), events.next()).await.unwrap().unwrap();
        assert!(matches!(first, RuntimeEvent::Failed { session_id, .. } if session_id == failed));
        // More than the buffer while the consumer is not reading: it lags, and gets the
        // current failures again instead of silently missing them.
        for n in 0..5u64 {
            let id = SessionId(uuid::Uuid::new_v4());
            inner.observe(&pod(id, "p", n, json!({"phase": "Pending"})));
        }
        let mut got = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
            got.push(e);
        }
        assert!(
            got.iter().any(|e| matches!(e, RuntimeEvent::Failed { session_id, .. } if *session_id == failed)),
            "{got:?}"
        );
    }
}
