use futures::future::BoxFuture;
use time::OffsetDateTime;

/// The current time, so the domain is deterministic under test.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// New ids, so the domain is deterministic under test.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait IdGenerator: Send + Sync {
    /// A new UUID.
    fn new_id(&self) -> uuid::Uuid;
}

/// Runs background work (provisioning a runtime, pumping a session's events) on the embedding
/// application's executor; the domain itself has no async runtime.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait Spawner: Send + Sync {
    /// Runs `task` to completion in the background.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}
