//! What a data-plane pod's status means for its session, in words a person understands.
//!
//! [`assess`] is a pure function of one Pod object: the watcher calls it on every event. It
//! never panics on odd answers — a missing status, an unknown phase or empty container
//! statuses read as "still on its way" — and it fails fast on what will not heal by waiting:
//! an image that cannot be pulled, a crash, an OOM kill, a pod no node can take
//! (`Unschedulable`; Cake does not wait for a cluster autoscaler), an eviction.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// How far a pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodView {
    /// On its way; the text is the step ("pulling image …").
    Progress(String),
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

fn memory_limit(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let limits = spec.containers.first()?.resources.as_ref()?.limits.as_ref()?;
    limits.get("memory").map(|q| q.0.clone())
}

/// What a container's state says, `None` when it says nothing decisive.
fn container_failure(pod: &Pod, c: &ContainerStatus, init: bool) -> Option<String> {
    let what = if init { "the workspace preparation (init container)" } else { "OpenCode" };
    let image = spec_image(pod, &c.name, init).unwrap_or_else(|| c.image.clone());
    if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or_default();
        match reason {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" | "RegistryUnavailable" => {
                return Some(with_message(format!("image {image} could not be pulled: {reason}"), w.message.as_ref()));
            }
            "CrashLoopBackOff" => {
                let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
                let detail = match last {
                    Some(t) if t.reason.as_deref() == Some("OOMKilled") => {
                        format!("; it ran out of memory (OOMKilled{})", limit_note(pod))
                    }
                    Some(t) => format!("; last exit code {}", t.exit_code),
                    None => String::new(),
                };
                return Some(format!("{what} keeps crashing (CrashLoopBackOff){detail}"));
            }
            // A missing Secret heals by itself: the control plane creates it right after the
            // Pod (it needs the Pod's uid as its owner) and the kubelet retries.
            "CreateContainerConfigError" if w.message.as_deref().is_some_and(|m| m.contains("not found")) => {}
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return Some(with_message(format!("{what} could not be started: {reason}"), w.message.as_ref()));
            }
            _ => {}
        }
    }
    if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
        if t.reason.as_deref() == Some("OOMKilled") {
            return Some(format!("{what} was killed for running out of memory (OOMKilled{})", limit_note(pod)));
        }
        if init && t.exit_code == 0 {
            return None;
        }
        let reason = t.reason.as_deref().filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default();
        let head = match t.signal {
            Some(sig) if t.exit_code == 0 => format!("{what} was killed by signal {sig}{reason}"),
            _ => format!("{what} exited with code {}{reason}", t.exit_code),
        };
        return Some(with_message(head, t.message.as_ref()));
    }
    None
}

fn limit_note(pod: &Pod) -> String {
    memory_limit(pod).map(|l| format!("; memory limit {l}")).unwrap_or_default()
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

/// Reads a pod's status.
pub fn assess(pod: &Pod) -> PodView {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodView::Failed("the data plane pod is being deleted".into());
    }
    let Some(status) = pod.status.as_ref() else {
        return PodView::Progress("waiting for the pod to be scheduled".into());
    };
    let init = status.init_container_statuses.as_deref().unwrap_or_default();
    let main = status.container_statuses.as_deref().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");

    if phase == "Failed" || phase == "Succeeded" {
        if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
            let head = if reason == "Evicted" {
                "the data plane pod was evicted".to_owned()
            } else {
                format!("the data plane pod failed ({reason})")
            };
            return PodView::Failed(with_message(head, status.message.as_ref()));
        }
        let from_containers = init
            .iter()
            .filter_map(|c| container_failure(pod, c, true))
            .chain(main.iter().filter_map(|c| container_failure(pod, c, false)))
            .next();
        return PodView::Failed(from_containers.unwrap_or_else(|| {
            if phase == "Succeeded" {
                "OpenCode exited".to_owned()
            } else {
                with_message("the data plane pod failed".to_owned(), status.message.as_ref())
            }
        }));
    }
    if let Some(reason) = init
        .iter()
        .filter_map(|c| container_failure(pod, c, true))
        .chain(main.iter().filter_map(|c| container_failure(pod, c, false)))
        .next()
    {
        return PodView::Failed(reason);
    }
    if let Some(c) = condition(pod, "PodScheduled").filter(|c| c.status != "True") {
        if c.reason.as_deref() == Some("Unschedulable") {
            return PodView::Failed(with_message("the pod cannot be scheduled".to_owned(), c.message.as_ref()));
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
        return PodView::Progress(if running(c) {
            "preparing the workspace".into()
        } else {
            format!("pulling image {}", image_of(c, true))
        });
    }
    if let Some(c) = main.first() {
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
        let pull = json!({"phase": "Pending", "containerStatuses": [{"name": "data-plane", "image": "cake/data-plane:x",
            "state": {"waiting": {"reason": "ErrImagePull", "message": "rpc error: not found"}}}]});
        assert_eq!(
            failed(assess(&pod(pull))),
            "image cake/data-plane:x could not be pulled: ErrImagePull: rpc error: not found"
        );
        let backoff = json!({"phase": "Pending", "initContainerStatuses": [{"name": "data-plane-init",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]});
        assert!(failed(assess(&pod(backoff))).starts_with("image cake/init:1 could not be pulled: ImagePullBackOff"));
        let crash = json!({"phase": "Running", "containerStatuses": [{"name": "data-plane",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 3}}}]});
        assert_eq!(failed(assess(&pod(crash))), "OpenCode keeps crashing (CrashLoopBackOff); last exit code 3");
        let oom = json!({"phase": "Failed", "containerStatuses": [{"name": "data-plane",
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]});
        assert_eq!(
            failed(assess(&pod(oom))),
            "OpenCode was killed for running out of memory (OOMKilled; memory limit 2Gi)"
        );
        let unschedulable = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]});
        assert_eq!(
            failed(assess(&pod(unschedulable))),
            "the pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory."
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
        assert!(matches!(assess(&deleting), PodView::Failed(_)));
        let long = "x".repeat(1000);
        let verbose = json!({"phase": "Pending", "containerStatuses": [{"name": "data-plane",
            "state": {"waiting": {"reason": "ErrImagePull", "message": long}}}]});
        assert!(failed(assess(&pod(verbose))).chars().count() < 400, "messages are cut short");
    }
}
