//! [`KubeRuntime`]: the session runtime for a Kubernetes cluster (DESIGN.md "Runtimes"). Each
//! session gets a Pod running OpenCode and a Secret with its material, in the session
//! namespace; the control plane dials the pod IP on port 4096 directly (no Service per session;
//! a NetworkPolicy admits only the control plane).
//!
//! # Layout
//!
//! - [`resources`]: the Pod and Secret apply bodies, labels, names.
//! - [`status`]: what a pod's status means for its session ([`status::assess`]).
//! - `runtime`: the [`SessionRuntime`](cake_core::ports::SessionRuntime) implementation and
//!   the one pod watcher per control plane.
//! - `reconcile`: the Lease-holding reconciler.
//!
//! # Creating a session's objects
//!
//! The **Pod is applied first, then the Secret** with the pod's uid as its owner. The Secret
//! thus always has an owner: if the control plane dies between the two calls, nothing leaks
//! (the reconciler or the session's deletion removes the Pod, and the garbage collector its
//! Secret). Until the Secret exists the kubelet reports `CreateContainerConfigError … not
//! found` and retries; the runtime reads that as progress, not failure (the init container
//! usually runs meanwhile anyway). The Pod is written with server-side apply (field manager
//! `cake-control-plane`, forced: its body is the same whoever writes it), so retrying a
//! provision is idempotent. The Secret is **created** (`POST`), never overwritten: its password
//! is what the pod's OpenCode reads, so of two replicas provisioning one session the second
//! gets `409 AlreadyExists`, reads the Secret and adopts its password; a Secret of an earlier
//! pod of the same name is replaced with the `resourceVersion` read. A provision that finds
//! the session's pod alive reuses it and its Secret untouched (a control plane that restarted,
//! or another replica); one that finds it ended, or finds it gone although a previous handle
//! says it existed, fails: the workspace lived in the pod's emptyDir and went with it.
//!
//! Every API call (each attempt, the lease calls, the health check) is bounded by
//! `api_timeout`: a half-open connection costs an attempt, not a hung provision or reconciler.
//! Watches are not bounded by it.
//!
//! # Sessions outlive the control plane
//!
//! [`SessionRuntime::survives_restart`](cake_core::ports::SessionRuntime::survives_restart)
//! is true: a control plane that starts (a restart, a second replica, a rolling update) leaves
//! running sessions alone rather than provisioning them again, and any replica serves any
//! session. After a failure, `stop` keeps a pod that is still ready (the failure was in the
//! connection to it; its emptyDir holds the session's work) and one that has ended (for
//! `kubectl logs`, without its Secret), and deletes one that failed without ending.
//!
//! # Status
//!
//! One `kube-runtime` watcher per control plane follows every data-plane pod of the
//! installation (label-selected by `app.kubernetes.io/managed-by` and
//! `app.kubernetes.io/instance`), relisting after `410 Gone` and backing off on errors. Each
//! change becomes a [`RuntimeEvent::Progress`](cake_core::ports::RuntimeEvent) step
//! ("pulling image …"), readiness for `wait_ready`, or a
//! [`RuntimeEvent::Failed`](cake_core::ports::RuntimeEvent) with a reason. What usually heals
//! (`Unschedulable`, a failed image pull) is progress for `pending_grace`, then a failure; the
//! housekeeping every replica does on each reconciler tick fails it when no event comes. A pod
//! that disappears (a delete event, or missing from a relist that began while it was alive)
//! fails its session — the service ignores that for sessions that are already failed or being
//! deleted. Observations are ordered by `resourceVersion`, so a provision's older copy of a pod
//! does not overwrite a newer watch event; what is remembered of failed and deleted pods
//! expires. Events are buffered from the start until the service subscribes; a consumer that
//! lags gets the current failures again.
//!
//! # Reconciliation
//!
//! See `reconcile`: only the holder of a `coordination.k8s.io/v1` Lease reconciles (and takes
//! over sessions whose replica went away mid-start), every replica serves every session.

pub mod resources;
mod runtime;
pub mod status;

mod reconcile;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

pub use runtime::{KubeRuntime, KubeStartError};

/// Settings of the Kubernetes runtime (`CAKE_SESSION_NAMESPACE`, `CAKE_DATA_PLANE_*`,
/// `CAKE_INSTANCE`, …; see `cake serve --help`).
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Namespace of the session pods; `None`: the control plane's own namespace.
    pub namespace: Option<String>,
    /// `app.kubernetes.io/instance` of everything created (the Helm release name), so two
    /// installations in one namespace leave each other's pods alone.
    pub instance: String,
    /// The OpenCode image (`data-plane` container).
    pub image: String,
    /// The init image (`data-plane-init` container).
    pub init_image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// Service account of the session pods (its token is never mounted).
    pub service_account: Option<String>,
    /// `{"requests": {…}, "limits": {…}}` of both containers.
    pub resources: Value,
    /// Node selector of the session pods.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the session pods (Kubernetes `Toleration` objects).
    pub tolerations: Vec<Value>,
    /// Names of image pull secrets in the session namespace.
    pub image_pull_secrets: Vec<String>,
    /// Talk to this API server URL without credentials (a `kubectl proxy`, or a test's fake
    /// API server) instead of in-cluster credentials or `KUBECONFIG`.
    pub api_url: Option<String>,
    /// How long a pod may take from creation to OpenCode answering.
    pub ready_timeout: Duration,
    /// How long a pod may be held up by what usually heals (`Unschedulable` while a node is
    /// added, a failed image pull being retried) before its session fails with the reason
    /// (never longer than `ready_timeout` in effect).
    pub pending_grace: Duration,
    /// `sizeLimit` of the emptyDir volumes by name (`workspace`, `home`, `tmp`); a volume
    /// without an entry has no limit.
    pub volume_size_limits: BTreeMap<String, String>,
    /// How often the Lease holder reconciles pods with sessions.
    pub reconcile_interval: Duration,
    /// `leaseDurationSeconds` of the reconciler Lease: how long a silent holder keeps it.
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (default: `$HOSTNAME` plus a random suffix).
    pub identity: Option<String>,
    /// Attempts of one API write (apply, delete) on 409, 429 and 5xx answers.
    pub retry_attempts: u32,
    /// First delay between attempts; doubles up to 2 s.
    pub retry_delay: Duration,
    /// How long one Kubernetes API call (one attempt) may take before it counts as failed
    /// and is retried: a half-open connection must not hang a provision or the reconciler.
    /// (Watches are not bounded by it: they stay open for minutes by design.)
    pub api_timeout: Duration,
    /// The control plane's URL as data-plane pods reach it (`CAKE_BROKER_URL` in a pod whose
    /// session was granted credentials), e.g. `http://cake-agents.cake.svc.cluster.local`.
    pub broker_url: Option<String>,
}

/// Default `CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS`.
pub fn default_volume_size_limits() -> BTreeMap<String, String> {
    [("workspace", "10Gi"), ("home", "2Gi"), ("tmp", "1Gi")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether `q` is a Kubernetes quantity such as `500Mi`, `10Gi`, `1.5G` or `1e9`.
fn is_quantity(q: &str) -> bool {
    let digits_end = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(suffix, "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E")
        || suffix.strip_prefix(['e', 'E']).is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

/// Default `CAKE_DATA_PLANE_RESOURCES`.
pub fn default_resources() -> Value {
    json!({"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}})
}

impl KubeSettings {
    /// Defaults for two images (everything else as `cake serve` defaults it).
    pub fn for_images(image: &str, init_image: &str) -> Self {
        Self {
            namespace: None,
            instance: "cake-agents".into(),
            image: image.into(),
            init_image: init_image.into(),
            image_pull_policy: "IfNotPresent".into(),
            service_account: None,
            resources: default_resources(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            image_pull_secrets: Vec::new(),
            api_url: None,
            ready_timeout: Duration::from_secs(300),
            pending_grace: Duration::from_secs(120),
            volume_size_limits: default_volume_size_limits(),
            reconcile_interval: Duration::from_secs(60),
            lease_duration: Duration::from_secs(30),
            identity: None,
            retry_attempts: 5,
            retry_delay: Duration::from_millis(200),
            api_timeout: Duration::from_secs(20),
            broker_url: None,
        }
    }

    /// Parses `CAKE_DATA_PLANE_RESOURCES`: `{"requests": {…}, "limits": {…}}` with quantity
    /// strings (or numbers).
    pub fn parse_resources(raw: &str) -> Result<Value, String> {
        let v: Value = serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("must be a JSON object like {\"requests\": {…}, \"limits\": {…}}")?;
        for (key, value) in obj {
            if key != "requests" && key != "limits" {
                return Err(format!("unknown key {key:?}; only \"requests\" and \"limits\" are allowed"));
            }
            let quantities = value.as_object().ok_or_else(|| format!("{key} must be an object"))?;
            for (name, q) in quantities {
                if !(q.is_string() || q.is_number()) {
                    return Err(format!("{key}.{name} must be a quantity such as \"500m\" or \"1Gi\""));
                }
            }
        }
        serde_json::from_value::<k8s_openapi::api::core::v1::ResourceRequirements>(v.clone())
            .map_err(|e| format!("not a resource requirement: {e}"))?;
        Ok(v)
    }

    /// Parses `CAKE_DATA_PLANE_NODE_SELECTOR`: a JSON object of strings.
    pub fn parse_node_selector(raw: &str) -> Result<BTreeMap<String, String>, String> {
        serde_json::from_str(raw).map_err(|e| format!("must be a JSON object of strings: {e}"))
    }

    /// Parses `CAKE_DATA_PLANE_TOLERATIONS`: a JSON array of Kubernetes tolerations.
    pub fn parse_tolerations(raw: &str) -> Result<Vec<Value>, String> {
        let list: Vec<Value> = serde_json::from_str(raw).map_err(|e| format!("must be a JSON array: {e}"))?;
        for t in &list {
            if !t.is_object() {
                return Err(format!("{t} is not a toleration object"));
            }
            serde_json::from_value::<k8s_openapi::api::core::v1::Toleration>(t.clone())
                .map_err(|e| format!("{t} is not a toleration: {e}"))?;
        }
        Ok(list)
    }

    /// Parses `CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS`: a JSON object from volume name
    /// (`workspace`, `home`, `tmp`) to a quantity such as `"10Gi"`; a volume left out, or
    /// given `null` or `""`, has no limit.
    pub fn parse_volume_size_limits(raw: &str) -> Result<BTreeMap<String, String>, String> {
        let v: serde_json::Map<String, Value> = serde_json::from_str(raw)
            .map_err(|e| format!("must be a JSON object like {{\"workspace\": \"10Gi\"}}: {e}"))?;
        let mut limits = BTreeMap::new();
        for (name, q) in v {
            if !resources::VOLUMES.iter().any(|(v, _)| *v == name) {
                return Err(format!("unknown volume {name:?}; the volumes are workspace, home and tmp"));
            }
            match q {
                Value::Null => {}
                Value::String(s) if s.trim().is_empty() => {}
                Value::String(s) if is_quantity(s.trim()) => {
                    limits.insert(name, s.trim().to_owned());
                }
                other => return Err(format!("{name}: {other} is not a quantity such as \"10Gi\"")),
            }
        }
        Ok(limits)
    }

    /// Checks `CAKE_DATA_PLANE_IMAGE_PULL_POLICY`.
    pub fn parse_pull_policy(raw: &str) -> Result<String, String> {
        match raw {
            "Always" | "IfNotPresent" | "Never" => Ok(raw.to_owned()),
            other => Err(format!("{other:?} is not one of Always, IfNotPresent, Never")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_reject_what_kubernetes_would_not_take() {
        assert!(KubeSettings::parse_resources(r#"{"requests":{"cpu":"1"},"limits":{"memory":"1Gi"}}"#).is_ok());
        for bad in [r#"{"request":{}}"#, "[]", "{", r#"{"limits":{"cpu":{}}}"#] {
            assert!(KubeSettings::parse_resources(bad).is_err(), "{bad}");
        }
        assert_eq!(KubeSettings::parse_node_selector(r#"{"pool":"agents"}"#).unwrap()["pool"], "agents");
        assert!(KubeSettings::parse_node_selector(r#"{"pool":1}"#).is_err());
        assert!(KubeSettings::parse_tolerations(r#"[{"key":"k","operator":"Exists","effect":"NoSchedule"}]"#).is_ok());
        assert!(KubeSettings::parse_tolerations(r#"[1]"#).is_err());
        assert!(KubeSettings::parse_tolerations(r#"{"key":"k"}"#).is_err());
        assert!(KubeSettings::parse_pull_policy("Sometimes").is_err());
        let limits = KubeSettings::parse_volume_size_limits(r#"{"workspace":"20Gi","home":"","tmp":null}"#).unwrap();
        assert_eq!(limits, BTreeMap::from([("workspace".to_owned(), "20Gi".to_owned())]));
        for ok in ["500Mi", "1.5G", "1e9", "2048", "10Ki"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [r#"{"data":"1Gi"}"#, r#"{"workspace":"ten gigs"}"#, r#"{"workspace":10}"#, "[]", r#"{"tmp":"1GB"}"#]
        {
            assert!(KubeSettings::parse_volume_size_limits(bad).is_err(), "{bad}");
        }
    }
}
