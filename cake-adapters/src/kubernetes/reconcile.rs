//! The reconciler: at start-up and then every `reconcile_interval`, the data-plane pods of the
//! installation are compared with the sessions in the database.
//!
//! - A pod whose session no longer exists is deleted, with its Secret (a control plane that
//!   died between deleting a session's row and its pod, or a pod created by a provision that
//!   lost the race with a delete).
//! - A pod of a `failed` session that still runs but is not ready (pending, pulling, never
//!   answered) is deleted: it would only hold resources. A ready one is kept with its
//!   workspace until the session is deleted (see `SessionRuntime::stop`).
//! - A `starting` or `ready` session whose pod is gone, or has ended, fails with a reason
//!   (events the watcher missed, e.g. while no control plane ran).
//! - A `provisioning`, `starting` or `deleting` session not updated for longer than the start
//!   timeout plus [`STALL_MARGIN`] was being driven by a replica that is gone: it is reported
//!   as [`RuntimeEvent::Stalled`], and the service of this replica starts it again (or
//!   finishes deleting it).
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
//! by clearing its holder. Every lease call is bounded by the API timeout. A pass checks,
//! before each delete and each failure it reports, that the lease was renewed less than two
//! thirds of its duration ago, and stops otherwise (a slow pass must not act after another
//! replica may have taken over). Every replica serves every session regardless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cake_core::Result;
use cake_core::ports::{RuntimeEvent, SessionRepository};
use cake_core::session::{SessionId, Status};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use tokio::time::Instant;

use super::resources::{MANAGED_BY, selector};
use super::runtime::{Inner, describe, session_of};
use super::status::{DELETED_FROM_OUTSIDE, PodView, assess, terminated};

/// How much longer than the start timeout a session may stay `provisioning`, `starting` or
/// `deleting` before the replica driving it is presumed gone (a provision's API calls and
/// their retries, the first prompt, and clock skew between the database and this replica).
pub(crate) const STALL_MARGIN: Duration = Duration::from_secs(300);

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

/// Leads or follows for the life of the control plane; reconciles while leading. Every
/// replica does its housekeeping on every tick.
pub(crate) async fn run(inner: Arc<Inner>, sessions: Arc<dyn SessionRepository>) {
    let interval = inner.settings.reconcile_interval;
    let tick = interval.min(inner.settings.lease_duration / 3).max(Duration::from_millis(100));
    let mut elector = Elector::default();
    let mut last: Option<Instant> = None;
    loop {
        // Before the request: the lease is ours for at most its duration from here.
        let asked = Instant::now();
        let leading = match tokio::time::timeout(inner.settings.api_timeout, elector.try_lead(&inner)).await {
            Ok(Ok(leading)) => leading,
            Ok(Err(e)) => {
                tracing::warn!(error = %describe(&e), "could not read or renew the reconciler lease");
                false
            }
            Err(_) => {
                tracing::warn!("the reconciler lease got no answer in time; following until it does");
                false
            }
        };
        inner.housekeeping();
        if !leading {
            last = None;
        } else if last.is_none_or(|t| t.elapsed() >= interval) {
            let lease = Leadership::renewed_at(asked, lease_seconds(&inner));
            if let Err(e) = reconcile_once(&inner, sessions.as_ref(), &lease).await {
                tracing::warn!(error = %e, "reconciliation failed; trying again later");
            }
            last = Some(Instant::now());
        }
        tokio::time::sleep(tick).await;
    }
}

/// `leaseDurationSeconds` as this replica writes it.
fn lease_seconds(inner: &Inner) -> Duration {
    Duration::from_secs(inner.settings.lease_duration.as_secs().max(1))
}

/// How long this replica may act as the Lease holder after a renewal.
pub(crate) struct Leadership {
    until: Instant,
}

impl Leadership {
    /// Renewed by a request sent at `asked`: another replica may take over `lease` after the
    /// renewal reached the API server; two thirds of it leave room for a slow answer.
    pub(crate) fn renewed_at(asked: Instant, lease: Duration) -> Self {
        Self { until: asked + lease * 2 / 3 }
    }

    /// Whether it is still safe to act as the holder.
    pub(crate) fn held(&self) -> bool {
        Instant::now() < self.until
    }
}

async fn list_pods(inner: &Inner) -> Result<Vec<Pod>> {
    let params = ListParams::default().labels(&selector(&inner.settings.instance));
    let pods = inner.pods();
    Ok(inner.retry("list data-plane pods", || pods.list(&params)).await?.items)
}

/// One reconciliation pass; stops early when `lease` may no longer be held.
pub(crate) async fn reconcile_once(inner: &Inner, sessions: &dyn SessionRepository, lease: &Leadership) -> Result<()> {
    let lost = || {
        tracing::info!("the reconciler lease may have passed to another replica; this pass stops");
        Ok(())
    };
    let before = list_pods(inner).await?;
    let statuses: HashMap<SessionId, Status> = sessions.list_statuses().await?.into_iter().collect();
    let mut problems: Vec<cake_core::CoreError> = Vec::new();
    for pod in &before {
        let Some(id) = session_of(pod) else { continue };
        let alive = !terminated(pod) && pod.metadata.deletion_timestamp.is_none();
        let reason = match statuses.get(&id) {
            None => "its session no longer exists",
            Some(Status::Failed) if alive && !matches!(assess(pod), PodView::Ready { .. }) => {
                "its session has failed and it is not ready"
            }
            _ => continue,
        };
        if !lease.held() {
            return lost();
        }
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
            None => DELETED_FROM_OUTSIDE.to_owned(),
            Some(PodView::Failed(reason)) => reason,
            Some(_) => continue,
        };
        if !lease.held() {
            return lost();
        }
        tracing::warn!(session.id = %id, %reason, "reconciler fails a session");
        inner.emit(RuntimeEvent::Failed { session_id: *id, reason });
    }
    let stall_after = inner.settings.ready_timeout.saturating_add(STALL_MARGIN);
    let stall_after = time::Duration::seconds(i64::try_from(stall_after.as_secs()).unwrap_or(i64::MAX));
    for (id, status) in &statuses {
        if !matches!(status, Status::Provisioning | Status::Starting | Status::Deleting) {
            continue;
        }
        let session = match sessions.get(*id).await {
            Ok(Some(session)) => session,
            Ok(None) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let quiet = time::OffsetDateTime::now_utc() - session.updated_at;
        if !matches!(session.status, Status::Provisioning | Status::Starting | Status::Deleting) || quiet < stall_after
        {
            continue;
        }
        if !lease.held() {
            return lost();
        }
        tracing::warn!(
            session.id = %id,
            status = session.status.as_str(),
            quiet_seconds = quiet.whole_seconds(),
            "a session has not moved for longer than a start takes; the replica driving it is gone: taking it over"
        );
        inner.emit(RuntimeEvent::Stalled { session_id: *id });
    }
    inner.forget_except(&statuses.keys().copied().collect::<HashSet<_>>());
    match problems.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
