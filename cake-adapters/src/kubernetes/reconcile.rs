//! The reconciler: at start-up and then every `reconcile_interval`, the data-plane pods of the
//! installation are compared with the sessions in the database.
//!
//! - A pod whose session no longer exists is deleted, with its Secret (a control plane that
//!   died between deleting a session's row and its pod, or a pod created by a provision that
//!   lost the race with a delete).
//! - A pod of a `failed` session that still runs is deleted (it would only use resources).
//! - A `starting` or `ready` session whose pod is gone, or has ended, fails with a reason
//!   (events the watcher missed, e.g. while no control plane ran).
//!
//! Pods are listed before *and* after the sessions are read: an orphan must be a pod that
//! existed before its session was looked up (a session is stored before its pod is created),
//! and a vanished pod must be missing after the session was read as `starting`/`ready` (its
//! pod is created before that status is stored), so neither check trips over a session that
//! is being created concurrently.
//!
//! # Leadership
//!
//! With several control-plane replicas only one reconciles: the holder of the
//! `coordination.k8s.io/v1` Lease `<instance>-reconciler` in the control plane's own
//! namespace. Every tick (a third of the lease duration, or the reconcile interval if
//! shorter) a replica reads the Lease; the holder renews it, another replica takes it over
//! only once it has seen the same `resourceVersion` for a whole `leaseDurationSeconds` on its
//! own clock (so clock skew between nodes does not matter), and every write is a `replace`
//! carrying the `resourceVersion` it read (or a `create`): of two replicas racing, one gets
//! `409 Conflict` and stays a follower. A replica that shuts down cleanly hands the Lease on
//! by clearing its holder. Every replica serves every session regardless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cake_core::ports::{RuntimeEvent, SessionRepository};
use cake_core::session::{SessionId, Status};
use cake_core::{CoreError, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use tokio::time::Instant;

use super::resources::{MANAGED_BY, selector};
use super::runtime::{Inner, session_of};
use super::status::{PodView, assess, terminated};

/// The Lease's name.
pub(crate) fn lease_name(instance: &str) -> String {
    format!("{instance}-reconciler")
}

fn leases(inner: &Inner) -> Api<Lease> {
    Api::namespaced(inner.client.clone(), &inner.lease_namespace)
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One replica's view of the Lease.
#[derive(Default)]
struct Elector {
    /// The `resourceVersion` last seen and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl Elector {
    /// Takes or renews the Lease; `true` while this replica holds it.
    async fn try_lead(&mut self, inner: &Inner) -> std::result::Result<bool, kube::Error> {
        let api = leases(inner);
        let name = lease_name(&inner.settings.instance);
        let seconds = i32::try_from(inner.settings.lease_duration.as_secs().max(1)).unwrap_or(30);
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(inner.lease_namespace.clone()),
                    labels: Some(
                        [
                            ("app.kubernetes.io/name", "cake-agents"),
                            ("app.kubernetes.io/instance", inner.settings.instance.as_str()),
                            ("app.kubernetes.io/component", "control-plane"),
                            ("app.kubernetes.io/part-of", "cake-agents"),
                            ("app.kubernetes.io/managed-by", MANAGED_BY),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(inner.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    tracing::info!(identity = %inner.identity, "took the reconciler lease");
                    self.observed = created.metadata.resource_version.map(|rv| (rv, Instant::now()));
                    Ok(true)
                }
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(inner.identity.as_str());
        if let Some(holder) = holder.as_ref().filter(|_| !mine) {
            let since = match &self.observed {
                Some((seen, at)) if *seen == version => *at,
                _ => {
                    self.observed = Some((version.clone(), Instant::now()));
                    Instant::now()
                }
            };
            let theirs = u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds).max(1)).unwrap_or(30);
            if since.elapsed() < Duration::from_secs(theirs) {
                return Ok(false);
            }
            tracing::info!(previous = %holder, "the reconciler lease expired; taking it over");
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(inner.identity.clone());
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(renewed) => {
                self.observed = renewed.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(true)
            }
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Hands the Lease on if this replica holds it (best effort, at shutdown).
pub(crate) async fn release(inner: &Inner) {
    let api = leases(inner);
    let name = lease_name(&inner.settings.instance);
    let Ok(Some(mut lease)) = api.get_opt(&name).await else { return };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(inner.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    if api.replace(&name, &PostParams::default(), &lease).await.is_ok() {
        tracing::info!("released the reconciler lease");
    }
}

/// Leads or follows for the life of the control plane; reconciles while leading.
pub(crate) async fn run(inner: Arc<Inner>, sessions: Arc<dyn SessionRepository>) {
    let interval = inner.settings.reconcile_interval;
    let tick = interval.min(inner.settings.lease_duration / 3).max(Duration::from_millis(100));
    let mut elector = Elector::default();
    let mut last: Option<Instant> = None;
    loop {
        let leading = match elector.try_lead(&inner).await {
            Ok(leading) => leading,
            Err(e) => {
                tracing::warn!(error = %e, "could not read or renew the reconciler lease");
                false
            }
        };
        if !leading {
            last = None;
        } else if last.is_none_or(|t| t.elapsed() >= interval) {
            if let Err(e) = reconcile_once(&inner, sessions.as_ref()).await {
                tracing::warn!(error = %e, "reconciliation failed; trying again later");
            }
            last = Some(Instant::now());
        }
        tokio::time::sleep(tick).await;
    }
}

async fn list_pods(inner: &Inner) -> Result<Vec<Pod>> {
    let params = ListParams::default().labels(&selector(&inner.settings.instance));
    let pods = inner.pods();
    Ok(inner.retry("list data-plane pods", || pods.list(&params)).await?.items)
}

/// One reconciliation pass.
pub(crate) async fn reconcile_once(inner: &Inner, sessions: &dyn SessionRepository) -> Result<()> {
    let before = list_pods(inner).await?;
    let statuses: HashMap<SessionId, Status> = sessions.list_statuses().await?.into_iter().collect();
    let mut problems: Vec<CoreError> = Vec::new();
    for pod in &before {
        let Some(id) = session_of(pod) else { continue };
        let reason = match statuses.get(&id) {
            None => "its session no longer exists",
            Some(Status::Failed) if !terminated(pod) && pod.metadata.deletion_timestamp.is_none() => {
                "its session has failed"
            }
            _ => continue,
        };
        tracing::info!(session.id = %id, reason, "reconciler deletes a data-plane pod");
        if let Err(e) = inner.delete_objects(&inner.namespace, id).await {
            problems.push(e);
        }
    }
    let after: HashMap<SessionId, Pod> =
        list_pods(inner).await?.into_iter().filter_map(|p| session_of(&p).map(|id| (id, p))).collect();
    for (id, status) in &statuses {
        if !matches!(status, Status::Starting | Status::Ready) {
            continue;
        }
        let reason = match after.get(id).map(assess) {
            None => "the data plane pod is gone (deleted from outside Cake)".to_owned(),
            Some(PodView::Failed(reason)) => reason,
            Some(_) => continue,
        };
        tracing::warn!(session.id = %id, %reason, "reconciler fails a session");
        inner.emit(RuntimeEvent::Failed { session_id: *id, reason });
    }
    inner.forget_except(&statuses.keys().copied().collect::<HashSet<_>>());
    match problems.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
