//! A fake Kubernetes API server (wiremock with one stateful responder) that keeps pods,
//! secrets and leases in memory, answers the calls the Kubernetes runtime makes — get, list,
//! server-side apply, create, replace, delete, `?watch=true` — and lets a test script the
//! cluster: set a pod's status, delete a pod "from outside", expire the watch (`410 Gone`),
//! inject 409/500 answers, hold an answer back (a slow or half-open connection).
//!
//! Deleting a pod is graceful like on a real API server: watchers first see it `MODIFIED`
//! with a `deletionTimestamp`, then `DELETED` (the fake's grace period is zero).
//!
//! Watches are long polls: a watch request gets every pod event after its
//! `resourceVersion` at once, or, when there is none yet, an empty answer after a short
//! delay (the client then watches again from the same version), so a test's change reaches
//! the watcher within a fraction of a second with no busy loop.
//!
//! [`FakeKubelet`] plays the node for the foundation scenario: it runs the real init script
//! (`docker/data-plane-init/init.sh`) as the init container, then starts the real OpenCode
//! with the env the runtime put in the pod spec and its Secret, on the pod's own loopback IP
//! and port 4096, and reports the pod ready there.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

/// How long an idle watch request is held before an empty answer.
const WATCH_POLL: Duration = Duration::from_millis(200);

#[derive(Default)]
struct State {
    rv: u64,
    pods: BTreeMap<(String, String), Value>,
    secrets: BTreeMap<(String, String), Value>,
    leases: BTreeMap<(String, String), Value>,
    /// Pod watch events: (resourceVersion, type, object).
    events: Vec<(u64, String, Value)>,
    /// Scripted failures: (method, path suffix, status), used once each, in order.
    failures: VecDeque<(String, String, u16)>,
    /// Scripted delays of non-watch requests: (method, path suffix, delay), used once each.
    delays: VecDeque<(String, String, Duration)>,
    /// (method, path, status) of every answer, watches left out.
    answers: Vec<(String, String, u16)>,
    /// Answer the next watch with `410 Gone`.
    expire_watch: bool,
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    }))
}

fn now() -> String {
    // RFC 3339 in UTC, seconds precision, without pulling a time crate into the fake.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

impl State {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn pod_event(&mut self, kind: &str, pod: Value) {
        let rv = pod["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(self.rv);
        self.events.push((rv, kind.to_owned(), pod));
    }

    /// Deletes a pod the way an API server does with a grace period: `deletionTimestamp`
    /// set (MODIFIED), then gone (DELETED). Returns the deleted pod.
    fn delete_pod(&mut self, key: &(String, String), tell_watchers: bool) -> Option<Value> {
        let mut pod = self.pods.remove(key)?;
        let rv = self.bump();
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        pod["metadata"]["deletionTimestamp"] = json!(now());
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if tell_watchers {
            self.pod_event("MODIFIED", pod.clone());
        }
        let rv = self.bump();
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        if tell_watchers {
            self.pod_event("DELETED", pod.clone());
        }
        Some(pod)
    }
}

/// The status code of an answer (wiremock keeps it private; its `Debug` shows it).
fn status_of(answer: &ResponseTemplate) -> u16 {
    let debug = format!("{answer:?}");
    debug
        .split("status_code: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The responder behind every route.
#[derive(Clone)]
struct Api(Arc<Mutex<State>>);

/// (namespace, resource, name) of a core or coordination path.
fn route(path: &str) -> Option<(String, String, Option<String>)> {
    let rest = path
        .strip_prefix("/api/v1/namespaces/")
        .or_else(|| path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/"))?;
    let mut parts = rest.split('/');
    let ns = parts.next()?.to_owned();
    let resource = parts.next()?.to_owned();
    let name = parts.next().map(str::to_owned);
    Some((ns, resource, name))
}

impl Respond for Api {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        let method = req.method.as_str().to_owned();
        let path = req.url.path().to_owned();
        let watch = req.url.query().unwrap_or_default().contains("watch=true");
        let delay = match st.delays.iter().position(|(m, p, _)| !watch && *m == method && path.ends_with(p.as_str())) {
            Some(i) => st.delays.remove(i).map(|(_, _, d)| d),
            None => None,
        };
        let answer = self.answer(&mut st, req, &method, &path);
        if !watch {
            st.answers.push((method, path, status_of(&answer)));
        }
        match delay {
            Some(d) => answer.set_delay(d),
            None => answer,
        }
    }
}

impl Api {
    fn answer(&self, st: &mut State, req: &Request, method: &str, path: &str) -> ResponseTemplate {
        let method = method.to_owned();
        let path = path.to_owned();
        if let Some(i) = st.failures.iter().position(|(m, p, _)| *m == method && path.ends_with(p.as_str())) {
            let (_, _, code) = st.failures.remove(i).unwrap();
            return status(code, if code == 409 { "Conflict" } else { "InternalError" }, "scripted failure");
        }
        let query: BTreeMap<String, String> =
            req.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let Some((ns, resource, name)) = route(&path) else {
            return status(404, "NotFound", &format!("the fake has no route {path}"));
        };
        let key = |name: &str| (ns.clone(), name.to_owned());
        match (method.as_str(), resource.as_str(), name) {
            ("GET", "pods", None) if query.get("watch").map(String::as_str) == Some("true") => {
                if std::mem::take(&mut st.expire_watch) {
                    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
                    return ResponseTemplate::new(200).set_body_raw(format!("{gone}\n"), "application/json");
                }
                let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                let lines: String = st
                    .events
                    .iter()
                    .filter(|(rv, _, pod)| *rv > since && pod["metadata"]["namespace"] == ns.as_str())
                    .map(|(_, kind, pod)| format!("{}\n", json!({"type": kind, "object": pod})))
                    .collect();
                let template = ResponseTemplate::new(200).set_body_raw(lines.clone(), "application/json");
                if lines.is_empty() { template.set_delay(WATCH_POLL) } else { template }
            }
            ("GET", "pods", None) => {
                let items: Vec<Value> = st.pods.iter().filter(|((n, _), _)| *n == ns).map(|(_, p)| p.clone()).collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": st.rv.to_string()}, "items": items
                }))
            }
            ("GET", kind, Some(name)) => {
                let store = match kind {
                    "pods" => &st.pods,
                    "secrets" => &st.secrets,
                    "leases" => &st.leases,
                    _ => return status(404, "NotFound", "unknown kind"),
                };
                match store.get(&key(&name)) {
                    Some(obj) => ResponseTemplate::new(200).set_body_json(obj),
                    None => status(404, "NotFound", &format!("{kind} \"{name}\" not found")),
                }
            }
            ("PATCH", kind @ ("pods" | "secrets"), Some(name)) => {
                let Ok(mut body) = serde_json::from_slice::<Value>(&req.body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let rv = st.bump();
                let store = if kind == "pods" { &mut st.pods } else { &mut st.secrets };
                let existing = store.get(&key(&name)).cloned();
                let uid = existing
                    .as_ref()
                    .and_then(|e| e["metadata"]["uid"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                body["metadata"]["uid"] = json!(uid);
                body["metadata"]["resourceVersion"] = json!(rv.to_string());
                body["metadata"]["creationTimestamp"] = json!(now());
                if kind == "pods" {
                    body["status"] =
                        existing.as_ref().map(|e| e["status"].clone()).unwrap_or(json!({"phase": "Pending"}));
                }
                store.insert(key(&name), body.clone());
                if kind == "pods" {
                    st.pod_event(if existing.is_some() { "MODIFIED" } else { "ADDED" }, body.clone());
                }
                ResponseTemplate::new(if existing.is_some() { 200 } else { 201 }).set_body_json(body)
            }
            ("DELETE", "pods", Some(name)) => match st.delete_pod(&key(&name), true) {
                Some(pod) => ResponseTemplate::new(200).set_body_json(pod),
                None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
            },
            ("DELETE", "secrets", Some(name)) => {
                let rv = st.bump();
                match st.secrets.remove(&key(&name)) {
                    Some(mut obj) => {
                        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                        ResponseTemplate::new(200).set_body_json(obj)
                    }
                    None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
                }
            }
            ("POST", "secrets", None) => {
                let Ok(mut body) = serde_json::from_slice::<Value>(&req.body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                if st.secrets.contains_key(&key(&name)) {
                    return status(409, "AlreadyExists", &format!("secrets \"{name}\" already exists"));
                }
                let rv = st.bump();
                body["metadata"]["resourceVersion"] = json!(rv.to_string());
                body["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                body["metadata"]["creationTimestamp"] = json!(now());
                st.secrets.insert(key(&name), body.clone());
                ResponseTemplate::new(201).set_body_json(body)
            }
            ("PUT", "secrets", Some(name)) => {
                let Ok(mut body) = serde_json::from_slice::<Value>(&req.body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let Some(current) = st.secrets.get(&key(&name)) else {
                    return status(404, "NotFound", &format!("secrets \"{name}\" not found"));
                };
                if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                let uid = current["metadata"]["uid"].clone();
                let rv = st.bump();
                body["metadata"]["resourceVersion"] = json!(rv.to_string());
                body["metadata"]["uid"] = uid;
                st.secrets.insert(key(&name), body.clone());
                ResponseTemplate::new(200).set_body_json(body)
            }
            ("POST", "leases", None) => {
                let Ok(mut body) = serde_json::from_slice::<Value>(&req.body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                if st.leases.contains_key(&key(&name)) {
                    return status(409, "AlreadyExists", "leases already exists");
                }
                let rv = st.bump();
                body["metadata"]["resourceVersion"] = json!(rv.to_string());
                body["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                st.leases.insert(key(&name), body.clone());
                ResponseTemplate::new(201).set_body_json(body)
            }
            ("PUT", "leases", Some(name)) => {
                let Ok(mut body) = serde_json::from_slice::<Value>(&req.body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let Some(current) = st.leases.get(&key(&name)) else {
                    return status(404, "NotFound", "lease not found");
                };
                if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                let rv = st.bump();
                body["metadata"]["resourceVersion"] = json!(rv.to_string());
                st.leases.insert(key(&name), body.clone());
                ResponseTemplate::new(200).set_body_json(body)
            }
            _ => status(405, "MethodNotAllowed", &format!("the fake does not serve {method} {path}")),
        }
    }
}

/// A running fake API server.
pub struct FakeKube {
    /// The wiremock server (its URL is the API server URL).
    pub server: MockServer,
    state: Arc<Mutex<State>>,
}

impl FakeKube {
    /// Starts an empty cluster.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(matchers::any()).respond_with(Api(state.clone())).mount(&server).await;
        Self { server, state }
    }

    /// The API server URL.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// A stored pod.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.state.lock().unwrap().pods.get(&(ns.into(), name.into())).cloned()
    }

    /// A stored secret.
    pub fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        self.state.lock().unwrap().secrets.get(&(ns.into(), name.into())).cloned()
    }

    /// A stored lease.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state.lock().unwrap().leases.get(&(ns.into(), name.into())).cloned()
    }

    /// Names of the stored pods of a namespace.
    pub fn pod_names(&self, ns: &str) -> Vec<String> {
        self.state.lock().unwrap().pods.keys().filter(|(n, _)| n == ns).map(|(_, p)| p.clone()).collect()
    }

    /// Replaces a pod's status (as the kubelet or scheduler would) and tells watchers.
    pub fn set_pod_status(&self, ns: &str, name: &str, status: Value) {
        let mut st = self.state.lock().unwrap();
        let rv = st.bump();
        let pod = st.pods.get_mut(&(ns.into(), name.into())).expect("the pod exists");
        pod["status"] = status;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let pod = pod.clone();
        st.pod_event("MODIFIED", pod);
    }

    /// Stores an object as if someone else had created it (a pod also tells watchers).
    pub fn insert(&self, kind: &str, ns: &str, mut obj: Value) {
        let mut st = self.state.lock().unwrap();
        let rv = st.bump();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        }
        match kind {
            "pods" => {
                st.pods.insert((ns.into(), name), obj.clone());
                st.pod_event("ADDED", obj);
            }
            "secrets" => {
                st.secrets.insert((ns.into(), name), obj);
            }
            "leases" => {
                st.leases.insert((ns.into(), name), obj);
            }
            other => panic!("the fake stores no {other}"),
        }
    }

    /// Deletes a pod from outside (gracefully: MODIFIED with a `deletionTimestamp`, then
    /// DELETED); with `tell_watchers` false no event is kept for it (as if it happened while
    /// the watch was broken: only a relist shows it).
    pub fn delete_pod(&self, ns: &str, name: &str, tell_watchers: bool) {
        self.state.lock().unwrap().delete_pod(&(ns.into(), name.into()), tell_watchers);
    }

    /// The next watch request is answered with `410 Gone`, and earlier events are forgotten
    /// (compacted), so only a fresh list can bring the watcher up to date.
    pub fn expire_watch(&self) {
        let mut st = self.state.lock().unwrap();
        st.expire_watch = true;
        st.events.clear();
    }

    /// The next request of `method` whose path ends with `path_suffix` is answered `code`
    /// (queue several to fail several).
    pub fn fail_next(&self, method: &str, path_suffix: &str, code: u16) {
        self.state.lock().unwrap().failures.push_back((method.into(), path_suffix.into(), code));
    }

    /// The next request (not a watch) of `method` whose path ends with `path_suffix` is
    /// answered only after `delay` (queue several to delay several).
    pub fn delay_next(&self, method: &str, path_suffix: &str, delay: Duration) {
        self.state.lock().unwrap().delays.push_back((method.into(), path_suffix.into(), delay));
    }

    /// `(method, path, status)` of every answer so far, watches left out.
    pub fn answers(&self) -> Vec<(String, String, u16)> {
        self.state.lock().unwrap().answers.clone()
    }

    /// Every request received so far.
    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// `(method, path?query)` of every request so far, watches left out.
    pub async fn calls(&self) -> Vec<(String, String)> {
        self.requests()
            .await
            .iter()
            .filter(|r| !r.url.query().unwrap_or_default().contains("watch=true"))
            .map(|r| {
                let q = r.url.query().map(|q| format!("?{q}")).unwrap_or_default();
                (r.method.to_string(), format!("{}{q}", r.url.path()))
            })
            .collect()
    }

    /// Waits (bounded) until `check` holds for the fake's requests; returns them.
    pub async fn wait_for_requests(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let reqs = self.requests().await;
            if check(&reqs) {
                return reqs;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until a stored pod satisfies `check`.
    pub async fn wait_for_pod(&self, ns: &str, name: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.pod(ns, name) {
                return p;
            }
            assert!(tokio::time::Instant::now() < deadline, "pod {ns}/{name} never appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A pod status the kubelet reports once OpenCode answers the readiness probe.
pub fn ready_status(ip: &str) -> Value {
    json!({
        "phase": "Running",
        "podIP": ip,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"}
        ],
        "initContainerStatuses": [{"name": "data-plane-init", "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [{"name": "data-plane", "ready": true, "restartCount": 0, "image": "", "imageID": "",
            "state": {"running": {"startedAt": now()}}}]
    })
}

/// Decodes a Secret's data into (key, value) pairs.
pub fn secret_data(secret: &Value) -> BTreeMap<String, String> {
    secret["data"]
        .as_object()
        .map(|d| {
            d.iter()
                .map(|(k, v)| {
                    let bytes =
                        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap();
                    (k.clone(), String::from_utf8(bytes).unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Points a control plane's configuration at a fake API server: the Kubernetes runtime, its
/// sessions in `namespace`, test images, a start timeout of `start_timeout_secs`.
pub fn use_fake_kube(c: &mut cake_server::config::Config, kube: &FakeKube, namespace: &str, start_timeout_secs: u64) {
    c.runtime = cake_server::config::RuntimeKind::Kubernetes;
    c.kube_api_url = Some(kube.uri());
    c.session_namespace = Some(namespace.into());
    c.data_plane_image = Some("cake/data-plane:test".into());
    c.data_plane_init_image = Some("cake/data-plane-init:test".into());
    c.data_plane_start_timeout = start_timeout_secs;
}

/// The node of the foundation scenario: runs a pod's `data-plane` container as a real
/// OpenCode process on the pod's own loopback IP.
pub struct FakeKubelet {
    child: tokio::process::Child,
    _root: tempfile::TempDir,
}

impl FakeKubelet {
    /// Starts the pod `ns/name` once its Secret exists: its volumes as empty directories, the
    /// init container (the real init script; `/usr/local/bin/cake` of the image is the test
    /// build's `cake`), then the container's command with the real
    /// binary, the hostname replaced by `ip`, its env (plain values, and `secretKeyRef`s read
    /// from the Secret) with the pod's paths mapped into a temporary directory; then reports
    /// the pod ready at `ip`.
    pub async fn run(kube: &FakeKube, ns: &str, name: &str, ip: &str, opencode: &std::path::Path) -> Self {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (pod, secret) = loop {
            if let (Some(p), Some(s)) = (kube.pod(ns, name), kube.secret(ns, name)) {
                break (p, s);
            }
            assert!(tokio::time::Instant::now() < deadline, "pod {name} and its secret never appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        kube.set_pod_status(
            ns,
            name,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                   "containerStatuses": [{"name": "data-plane", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        let data = secret_data(&secret);
        let root = tempfile::Builder::new().prefix("cake-kubelet").tempdir_in("/tmp").unwrap();
        let map = |v: &str| -> String {
            for (prefix, dir) in [("/home/cake", "home"), ("/workspace", "workspace"), ("/tmp", "tmp")] {
                if let Some(rest) = v.strip_prefix(prefix) {
                    return format!("{}/{dir}{rest}", root.path().display());
                }
            }
            v.to_owned()
        };
        // The pod's emptyDir volumes, empty as the kubelet makes them.
        for dir in ["home", "workspace", "tmp"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        // The init container: the real docker/data-plane-init/init.sh with the init
        // container's env, then $HOME holds only what it wrote (OpenCode makes its own dirs).
        let init = &pod["spec"]["initContainers"][0];
        assert_eq!(init["name"], "data-plane-init");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/data-plane-init/init.sh");
        let mut init_cmd = std::process::Command::new("sh");
        init_cmd
            .arg(&script)
            .current_dir(map(init["workingDir"].as_str().unwrap()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for e in init["env"].as_array().unwrap() {
            init_cmd.env(e["name"].as_str().unwrap(), map(e["value"].as_str().unwrap()));
        }
        // The image ships `cake` at /usr/local/bin/cake; on this "node" it is the test build's.
        init_cmd.env(
            "CAKE_GIT_CREDENTIAL_HELPER",
            cake_server::startup::git_helper_for(&crate::app::cake_bin().to_string_lossy()),
        );
        let out = init_cmd.output().expect("run init.sh");
        assert!(out.status.success(), "init.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        let home: Vec<String> = std::fs::read_dir(root.path().join("home"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(home, [".gitconfig"], "OpenCode starts with an empty $HOME but for the git config");
        let container = &pod["spec"]["containers"][0];
        let command: Vec<String> =
            container["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        assert_eq!(command[0], "opencode");
        let args: Vec<String> =
            command[1..].iter().map(|a| if a == "0.0.0.0" { ip.to_owned() } else { a.clone() }).collect();
        let mut cmd = tokio::process::Command::new(opencode);
        cmd.args(&args)
            .current_dir(map(container["workingDir"].as_str().unwrap()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for e in container["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            let value = match e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                Some(key) => data.get(key).unwrap_or_else(|| panic!("the secret has no {key}")).clone(),
                None => map(e["value"].as_str().unwrap()),
            };
            cmd.env(name, value);
        }
        let mut child = cmd.spawn().expect("start OpenCode");
        kube.set_pod_status(
            ns,
            name,
            json!({"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "data-plane", "state": {"running": {}}}]}),
        );
        let stdout = child.stdout.take().unwrap();
        let needle = format!("listening on http://{ip}:4096");
        let listening = tokio::time::timeout(Duration::from_secs(90), async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(&needle) {
                    // Keep draining so OpenCode never blocks on a full pipe.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(listening.ok(), Some(true), "OpenCode did not listen on {ip}:4096");
        kube.set_pod_status(ns, name, ready_status(ip));
        Self { child, _root: root }
    }

    /// Whether OpenCode still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops OpenCode (the pod was deleted).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
