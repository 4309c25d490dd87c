//! What a data-plane pod's status means for its session, in words a person understands.
//!
//! [`assess`] is a pure function of one Pod object: the watcher calls it on every event. It
//! never panics on odd answers — a missing status, an unknown phase or empty container
//! statuses read as "still on its way". It fails at once on what will not heal by waiting: a
//! malformed image name, an image that may not be pulled (`ErrImageNeverPull`), a crash, an OOM
//! kill, an eviction, a deleted pod. What usually heals — no node fits yet (`Unschedulable`:
//! a cluster autoscaler may be adding one), an image pull that failed once (`ErrImagePull`,
//! `ImagePullBackOff`: a registry answering 429, a flaky network) — is
//! [`PodView::Waiting`]: the runtime shows it as progress for a grace period
//! (`CAKE_DATA_PLANE_PENDING_GRACE`) and fails the session with its reason only if it lasts.
//!
//! Containers are found by name (`data-plane`, `data-plane-init`), never by position: a mesh
//! or a policy engine may inject sidecars and init containers of its own.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::resources::{DATA_PLANE_CONTAINER, INIT_CONTAINER};

/// Why a session fails whose pod was deleted by someone else than Cake (Cake's own deletes
/// come after the session failed or while it is being deleted, so nobody sees it then).
pub const DELETED_FROM_OUTSIDE: &str = "the data plane pod was deleted from outside Cake";

/// How far a pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodView {
    /// On its way; the text is the step ("pulling image …").
    Progress(String),
    /// Held up by something that usually heals by itself (no node fits yet, an image pull
    /// failed once); shown as progress with `detail` for a grace period, then a failure with
    /// `failure` if it lasts.
    Waiting {
        /// The step, with what holds it up ("waiting for a node: 0/3 nodes are available …").
        detail: String,
        /// The reason the session fails with if it lasts.
        failure: String,
    },
    /// OpenCode's port answers the readiness probe at this pod IP.
    Ready {
        /// The pod IP.
        ip: String,
    },
    /// It will not become ready; the text says why.
    Failed(String),
}

const MAX_MESSAGE: usize = 300;

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(MAX_MESSAGE).collect();
        format!("{cut}…")
    }
}

fn with_message(head: String, message: Option<&String>) -> String {
    match message.map(|m| short(m)).filter(|m| !m.is_empty()) {
        Some(m) => format!("{head}: {m}"),
        None => head,
    }
}

/// The image a container of the pod's spec asked for (status images can be resolved digests).
fn spec_image(pod: &Pod, container: &str, init: bool) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let list = if init { spec.init_containers.as_ref()? } else { &spec.containers };
    list.iter().find(|c| c.name == container).and_then(|c| c.image.clone())
}

/// The memory limit of a container of the pod's spec.
fn memory_limit(pod: &Pod, container: &str, init: bool) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let list = if init { spec.init_containers.as_ref()? } else { &spec.containers };
    let limits = list.iter().find(|c| c.name == container)?.resources.as_ref()?.limits.as_ref()?;
    limits.get("memory").map(|q| q.0.clone())
}

/// What a container is, for a person.
fn describe_container(name: &str, init: bool) -> String {
    match (name, init) {
        (INIT_CONTAINER, true) => "the workspace preparation (init container)".to_owned(),
        (DATA_PLANE_CONTAINER, false) => "OpenCode".to_owned(),
        (other, true) => format!("init container {other}"),
        (other, false) => format!("container {other}"),
    }
}

/// Something wrong with a container.
enum Trouble {
    /// It will not heal: the session fails.
    Fatal(String),
    /// It usually heals (a pull that failed once): progress for a grace period.
    Transient { detail: String, failure: String },
}

/// What a container's state says, `None` when it says nothing decisive.
fn container_trouble(pod: &Pod, c: &ContainerStatus, init: bool) -> Option<Trouble> {
    let what = describe_container(&c.name, init);
    let image = spec_image(pod, &c.name, init).unwrap_or_else(|| c.image.clone());
    if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or_default();
        match reason {
            // A registry answering 429 or a flaky network shows first as ErrImagePull, then
            // ImagePullBackOff while the kubelet waits to try again.
            "ErrImagePull" | "ImagePullBackOff" | "RegistryUnavailable" => {
                return Some(Trouble::Transient {
                    detail: with_message(
                        format!("pulling image {image} (retrying after {reason})"),
                        w.message.as_ref(),
                    ),
                    failure: with_message(format!("image {image} could not be pulled: {reason}"), w.message.as_ref()),
                });
            }
            "InvalidImageName" | "ErrImageNeverPull" => {
                return Some(Trouble::Fatal(with_message(
                    format!("image {image} could not be pulled: {reason}"),
                    w.message.as_ref(),
                )));
            }
            "CrashLoopBackOff" => {
                let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                let detail = match last {
                    Some(t) if t.reason.as_deref() == Some("OOMKilled") => {
                        format!("; it ran out of memory (OOMKilled{})", limit_note(pod, &c.name, init))
                    }
                    Some(t) => format!("; last exit code {}", t.exit_code),
                    None => String::new(),
                };
                return Some(Trouble::Fatal(format!("{what} keeps crashing (CrashLoopBackOff){detail}")));
            }
            // A missing Secret heals by itself: the control plane creates it right after the
            // Pod (it needs the Pod's uid as its owner) and the kubelet retries.
            "CreateContainerConfigError" if w.message.as_deref().is_some_and(|m| m.contains("not found")) => {}
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return Some(Trouble::Fatal(with_message(
                    format!("{what} could not be started: {reason}"),
                    w.message.as_ref(),
                )));
            }
            _ => {}
        }
    }
    if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
        if t.reason.as_deref() == Some("OOMKilled") {
            return Some(Trouble::Fatal(format!(
                "{what} was killed for running out of memory (OOMKilled{})",
                limit_note(pod, &c.name, init)
            )));
        }
        if init && t.exit_code == 0 {
            return None;
        }
        let reason = t.reason.as_deref().filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default();
        let head = match t.signal {
            Some(sig) if t.exit_code == 0 => format!("{what} was killed by signal {sig}{reason}"),
            _ => format!("{what} exited with code {}{reason}", t.exit_code),
        };
        return Some(Trouble::Fatal(with_message(head, t.message.as_ref())));
    }
    None
}

fn limit_note(pod: &Pod, container: &str, init: bool) -> String {
    memory_limit(pod, container, init).map(|l| format!("; memory limit {l}")).unwrap_or_default()
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

fn running(c: &ContainerStatus) -> bool {
    c.state.as_ref().is_some_and(|s| s.running.is_some())
}

/// Why a pod with a deletion timestamp is going: an eviction says so in its `DisruptionTarget`
/// condition; anything else is a delete.
fn deleted(pod: &Pod) -> String {
    match condition(pod, "DisruptionTarget").filter(|c| c.status == "True") {
        Some(c) => with_message(
            format!("the data plane pod was evicted ({})", c.reason.as_deref().unwrap_or("DisruptionTarget")),
            c.message.as_ref(),
        ),
        None => DELETED_FROM_OUTSIDE.to_owned(),
    }
}

/// Reads a pod's status.
pub fn assess(pod: &Pod) -> PodView {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodView::Failed(deleted(pod));
    }
    let Some(status) = pod.status.as_ref() else {
        return PodView::Progress("waiting for the pod to be scheduled".into());
    };
    let init = status.init_container_statuses.as_deref().unwrap_or_default();
    let main = status.container_statuses.as_deref().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    // Cake's own containers speak first; injected ones (sidecars) after.
    let ours = |c: &&ContainerStatus| c.name == INIT_CONTAINER || c.name == DATA_PLANE_CONTAINER;
    let troubles = || {
        let (own_init, other_init): (Vec<&ContainerStatus>, Vec<&ContainerStatus>) = init.iter().partition(ours);
        let (own_main, other_main): (Vec<&ContainerStatus>, Vec<&ContainerStatus>) = main.iter().partition(ours);
        let init_troubles = own_init.into_iter().chain(other_init).filter_map(|c| container_trouble(pod, c, true));
        let main_troubles = own_main.into_iter().chain(other_main).filter_map(|c| container_trouble(pod, c, false));
        init_troubles.chain(main_troubles).collect::<Vec<_>>()
    };

    if phase == "Failed" || phase == "Succeeded" {
        if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
            let head = if reason == "Evicted" {
                "the data plane pod was evicted".to_owned()
            } else {
                format!("the data plane pod failed ({reason})")
            };
            return PodView::Failed(with_message(head, status.message.as_ref()));
        }
        let from_containers = troubles()
            .into_iter()
            .map(|t| match t {
                Trouble::Fatal(reason) | Trouble::Transient { failure: reason, .. } => reason,
            })
            .next();
        return PodView::Failed(from_containers.unwrap_or_else(|| {
            if phase == "Succeeded" {
                "OpenCode exited".to_owned()
            } else {
                with_message("the data plane pod failed".to_owned(), status.message.as_ref())
            }
        }));
    }
    let mut transient = None;
    for trouble in troubles() {
        match trouble {
            Trouble::Fatal(reason) => return PodView::Failed(reason),
            Trouble::Transient { detail, failure } => {
                transient.get_or_insert(PodView::Waiting { detail, failure });
            }
        }
    }
    if let Some(waiting) = transient {
        return waiting;
    }
    if let Some(c) = condition(pod, "PodScheduled").filter(|c| c.status != "True") {
        if c.reason.as_deref() == Some("Unschedulable") {
            // On an autoscaled node pool every new pod is unschedulable until a node joins.
            return PodView::Waiting {
                detail: with_message("waiting for a node".to_owned(), c.message.as_ref()),
                failure: with_message("the pod cannot be scheduled".to_owned(), c.message.as_ref()),
            };
        }
        return PodView::Progress("waiting for a node".into());
    }
    let ready = condition(pod, "Ready").is_some_and(|c| c.status == "True");
    if ready && let Some(ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) {
        return PodView::Ready { ip: ip.to_owned() };
    }
    let scheduled = condition(pod, "PodScheduled").is_some_and(|c| c.status == "True");
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let image_of = |c: &ContainerStatus, init: bool| spec_image(pod, &c.name, init).unwrap_or_else(|| c.image.clone());
    if let Some(c) = init.iter().find(|c| c.state.as_ref().is_none_or(|s| s.terminated.is_none())) {
        return PodView::Progress(match (running(c), c.name.as_str()) {
            (true, INIT_CONTAINER) => "preparing the workspace".into(),
            (true, other) => format!("running init container {other}"),
            (false, _) => format!("pulling image {}", image_of(c, true)),
        });
    }
    if let Some(c) = main.iter().find(|c| c.name == DATA_PLANE_CONTAINER) {
        if running(c) {
            return PodView::Progress("starting OpenCode".into());
        }
        return PodView::Progress(match waiting_reason(c) {
            Some("CreateContainerConfigError") => "waiting for the session's secret".into(),
            _ => format!("pulling image {}", image_of(c, false)),
        });
    }
    match (scheduled, node) {
        (true, Some(node)) => PodView::Progress(format!("scheduled on node {node}")),
        (true, None) => PodView::Progress("scheduled".into()),
        (false, _) if phase == "Running" => PodView::Progress("starting OpenCode".into()),
        (false, _) => PodView::Progress("waiting for the pod to be scheduled".into()),
    }
}

/// Whether a pod has ended for good (its containers will not run again).
pub fn terminated(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "nodeName": "node-1",
                "initContainers": [{"name": "data-plane-init", "image": "cake/init:1"}],
                "containers": [{"name": "data-plane", "image": "cake/data-plane:x",
                                "resources": {"limits": {"memory": "2Gi"}}}]
            },
            "status": status
        }))
        .unwrap()
    }

    fn failed(view: PodView) -> String {
        match view {
            PodView::Failed(r) => r,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn progress(view: PodView) -> String {
        match view {
            PodView::Progress(r) => r,
            other => panic!("expected progress, got {other:?}"),
        }
    }

    #[test]
    fn odd_answers_read_as_progress() {
        let no_status: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(progress(assess(&no_status)), "waiting for the pod to be scheduled");
        assert_eq!(progress(assess(&pod(json!({})))), "waiting for the pod to be scheduled");
        let odd = pod(json!({"phase": "Weird", "containerStatuses": [], "conditions": [{"type": "X", "status": "?"}]}));
        assert!(matches!(assess(&odd), PodView::Progress(_)));
        let nameless = pod(json!({"phase": "Pending", "containerStatuses": [{}]}));
        assert!(matches!(assess(&nameless), PodView::Progress(_)));
    }

    #[test]
    fn progress_follows_the_phases() {
        let scheduled = json!({"type": "PodScheduled", "status": "True"});
        assert_eq!(
            progress(assess(&pod(
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]})
            ))),
            "waiting for a node"
        );
        assert_eq!(
            progress(assess(&pod(json!({"phase": "Pending", "conditions": [scheduled]})))),
            "scheduled on node node-1"
        );
        let init_waiting = json!({"phase": "Pending", "conditions": [scheduled],
            "initContainerStatuses": [{"name": "data-plane-init", "state": {"waiting": {"reason": "PodInitializing"}}}]});
        assert_eq!(progress(assess(&pod(init_waiting))), "pulling image cake/init:1");
        let init_running = json!({"phase": "Pending", "conditions": [scheduled],
            "initContainerStatuses": [{"name": "data-plane-init", "state": {"running": {}}}]});
        assert_eq!(progress(assess(&pod(init_running))), "preparing the workspace");
        let init_done = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        let pulling = json!({"phase": "Pending", "conditions": [scheduled],
            "initContainerStatuses": [{"name": "data-plane-init", "state": init_done}],
            "containerStatuses": [{"name": "data-plane", "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        assert_eq!(progress(assess(&pod(pulling))), "pulling image cake/data-plane:x");
        let starting = json!({"phase": "Running", "conditions": [scheduled, {"type": "Ready", "status": "False"}],
            "podIP": "10.0.0.7",
            "initContainerStatuses": [{"name": "data-plane-init", "state": init_done}],
            "containerStatuses": [{"name": "data-plane", "state": {"running": {}}}]});
        assert_eq!(progress(assess(&pod(starting))), "starting OpenCode");
        let ready = json!({"phase": "Running", "conditions": [scheduled, {"type": "Ready", "status": "True"}],
            "podIP": "10.0.0.7", "containerStatuses": [{"name": "data-plane", "ready": true, "state": {"running": {}}}]});
        assert_eq!(assess(&pod(ready)), PodView::Ready { ip: "10.0.0.7".into() });
        let ready_without_ip =
            json!({"phase": "Running", "conditions": [scheduled, {"type": "Ready", "status": "True"}]});
        assert!(matches!(assess(&pod(ready_without_ip)), PodView::Progress(_)));
        let secret_missing = json!({"phase": "Pending", "conditions": [scheduled],
            "containerStatuses": [{"name": "data-plane", "state": {"waiting": {"reason": "CreateContainerConfigError",
                "message": "secret \"cake-session-x\" not found"}}}]});
        assert_eq!(progress(assess(&pod(secret_missing))), "waiting for the session's secret");
    }

    #[test]
    fn failures_say_why() {
        let invalid = json!({"phase": "Pending", "containerStatuses": [{"name": "data-plane", "image": "cake/data-plane:x",
            "state": {"waiting": {"reason": "InvalidImageName", "message": "couldn't parse image reference"}}}]});
        assert_eq!(
            failed(assess(&pod(invalid))),
            "image cake/data-plane:x could not be pulled: InvalidImageName: couldn't parse image reference"
        );
        let never = json!({"phase": "Pending", "initContainerStatuses": [{"name": "data-plane-init",
            "state": {"waiting": {"reason": "ErrImageNeverPull"}}}]});
        assert_eq!(failed(assess(&pod(never))), "image cake/init:1 could not be pulled: ErrImageNeverPull");
        let crash = json!({"phase": "Running", "containerStatuses": [{"name": "data-plane",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 3}}}]});
        assert_eq!(failed(assess(&pod(crash))), "OpenCode keeps crashing (CrashLoopBackOff); last exit code 3");
        let oom = json!({"phase": "Failed", "containerStatuses": [{"name": "data-plane",
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]});
        assert_eq!(
            failed(assess(&pod(oom))),
            "OpenCode was killed for running out of memory (OOMKilled; memory limit 2Gi)"
        );
        let exited = json!({"phase": "Failed", "containerStatuses": [{"name": "data-plane",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]});
        assert_eq!(failed(assess(&pod(exited))), "OpenCode exited with code 1 (Error)");
        let init_failed = json!({"phase": "Failed", "initContainerStatuses": [{"name": "data-plane-init",
            "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]});
        assert!(
            failed(assess(&pod(init_failed)))
                .starts_with("the workspace preparation (init container) exited with code 2")
        );
        let evicted =
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."});
        assert_eq!(
            failed(assess(&pod(evicted))),
            "the data plane pod was evicted: The node was low on resource: memory."
        );
        let mut deleting = pod(json!({"phase": "Running"}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(failed(assess(&deleting)), DELETED_FROM_OUTSIDE);
        let mut drained = pod(json!({"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]}));
        drained.metadata.deletion_timestamp = deleting.metadata.deletion_timestamp.clone();
        assert_eq!(
            failed(assess(&drained)),
            "the data plane pod was evicted (EvictionByEvictionAPI): Eviction API: evicting"
        );
        let long = "x".repeat(1000);
        let verbose = json!({"phase": "Pending", "containerStatuses": [{"name": "data-plane",
            "state": {"waiting": {"reason": "CreateContainerError", "message": long}}}]});
        assert!(failed(assess(&pod(verbose))).chars().count() < 400, "messages are cut short");
    }

    fn waiting(view: PodView) -> (String, String) {
        match view {
            PodView::Waiting { detail, failure } => (detail, failure),
            other => panic!("expected waiting, got {other:?}"),
        }
    }

    #[test]
    fn what_usually_heals_is_waiting_not_failure() {
        let unschedulable = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]});
        assert_eq!(
            waiting(assess(&pod(unschedulable))),
            (
                "waiting for a node: 0/3 nodes are available: 3 Insufficient memory.".into(),
                "the pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory.".into()
            )
        );
        let pull = json!({"phase": "Pending", "containerStatuses": [{"name": "data-plane", "image": "cake/data-plane:x",
            "state": {"waiting": {"reason": "ErrImagePull", "message": "429 Too Many Requests"}}}]});
        assert_eq!(
            waiting(assess(&pod(pull))),
            (
                "pulling image cake/data-plane:x (retrying after ErrImagePull): 429 Too Many Requests".into(),
                "image cake/data-plane:x could not be pulled: ErrImagePull: 429 Too Many Requests".into()
            )
        );
        let backoff = json!({"phase": "Pending", "initContainerStatuses": [{"name": "data-plane-init",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]});
        let (_, failure) = waiting(assess(&pod(backoff)));
        assert!(failure.starts_with("image cake/init:1 could not be pulled: ImagePullBackOff"), "{failure}");
        // A fatal problem of another container wins over a transient one.
        let both = json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "data-plane-init", "state": {"waiting": {"reason": "ErrImagePull"}}}],
            "containerStatuses": [{"name": "data-plane", "state": {"waiting": {"reason": "InvalidImageName"}}}]});
        assert!(failed(assess(&pod(both))).contains("InvalidImageName"));
        // A pod that ended while pulling fails with the pull's reason.
        let ended = json!({"phase": "Failed", "containerStatuses": [{"name": "data-plane", "image": "x",
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]});
        assert!(failed(assess(&pod(ended))).contains("ImagePullBackOff"));
    }

    #[test]
    fn containers_are_found_by_name_not_position() {
        let mut with_sidecar = pod(json!({"phase": "Running", "podIP": "10.0.0.7",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "initContainerStatuses": [
                {"name": "istio-init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "data-plane-init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
            "containerStatuses": [
                {"name": "istio-proxy", "state": {"running": {}}},
                {"name": "data-plane", "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(progress(assess(&with_sidecar)), "pulling image cake/data-plane:x");
        with_sidecar.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[1] =
            serde_json::from_value(json!({"name": "data-plane", "image": "", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"running": {}}}))
            .unwrap();
        assert_eq!(progress(assess(&with_sidecar)), "starting OpenCode");
        let init_sidecar = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
            "initContainerStatuses": [{"name": "istio-init", "state": {"running": {}}}]});
        assert_eq!(progress(assess(&pod(init_sidecar))), "running init container istio-init");

        // The memory limit is the OOM-killed container's, not the first container's.
        let mut oom: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "istio-proxy", "resources": {"limits": {"memory": "128Mi"}}},
                {"name": "data-plane", "image": "cake/data-plane:x", "resources": {"limits": {"memory": "4Gi"}}}]},
            "status": {"phase": "Failed", "containerStatuses": [
                {"name": "istio-proxy", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "data-plane", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}))
        .unwrap();
        assert_eq!(failed(assess(&oom)), "OpenCode was killed for running out of memory (OOMKilled; memory limit 4Gi)");
        oom.status.as_mut().unwrap().container_statuses.as_mut().unwrap().swap(0, 1);
        assert_eq!(failed(assess(&oom)), "OpenCode was killed for running out of memory (OOMKilled; memory limit 4Gi)");
    }
}
