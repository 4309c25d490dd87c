use futures::stream::BoxStream;

use crate::events::{Frame, FrameData};
use crate::session::SessionId;

/// A subscription to one session's frames.
pub struct Subscription {
    /// Frames after the client's `Last-Event-ID` still in the buffer, oldest first.
    pub backlog: Vec<Frame>,
    /// The id of the newest frame published so far (the id the connect-time status frame
    /// carries), or 0.
    pub last_id: u64,
    /// Frames as they are published. Ends when the session's channel closes or the observer
    /// falls too far behind (it then reconnects with `Last-Event-ID`).
    pub live: BoxStream<'static, Frame>,
}

/// Fans each session's frames out to all its observers, with a bounded replay buffer.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait EventHub: Send + Sync {
    /// Publishes a frame to a session's observers and buffer; returns its id.
    fn publish(&self, session: SessionId, data: FrameData) -> u64;
    /// Publishes a status frame unless one of this `version` or a newer one was published
    /// before (checked and published atomically, so observers never see a session go back to
    /// an older state, nor the same state twice); returns the frame's id if published.
    fn publish_status(&self, session: Box<crate::session::Session>) -> Option<u64>;
    /// Subscribes, replaying buffered frames newer than `last_event_id`.
    fn subscribe(&self, session: SessionId, last_event_id: Option<u64>) -> Subscription;
    /// Ends every subscription of a session and forgets its buffer.
    fn close(&self, session: SessionId);
    /// Whether the session has observers in this process now.
    fn is_observed(&self, session: SessionId) -> bool;
    /// The sessions with observers in this process now.
    fn observed(&self) -> Vec<SessionId>;
}
