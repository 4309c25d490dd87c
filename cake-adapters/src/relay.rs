//! [`BroadcastHub`]: one tokio broadcast channel per session, fanning frames out to every
//! observer, plus a bounded ring buffer for `Last-Event-ID` resumption.
//!
//! Frame ids start at the hub's creation time in microseconds since the epoch and increase by
//! one per frame, so ids stay increasing across control-plane restarts and a client resuming
//! with an id from before a restart simply gets the whole buffer.
//!
//! Memory stays bounded by the sessions in use: a session's buffer is dropped once nobody has
//! observed it and nothing was published to it for the idle TTL (10 minutes by default), so
//! a long-lived control plane does not keep the last frames of every session it ever relayed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cake_core::events::{Frame, FrameData};
use cake_core::ports::{EventHub, Subscription};
use cake_core::session::{Session, SessionId};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

struct Channel {
    /// The last publish, subscription or observer seen: when the buffer was last of use.
    touched: Instant,
    /// Created on the first subscription and dropped when the last observer has gone, so a
    /// session nobody watches costs only its replay buffer (a broadcast channel allocates its
    /// whole ring up front).
    tx: Option<broadcast::Sender<Frame>>,
    buffer: VecDeque<Frame>,
    /// The version of the newest status frame published, kept apart from the buffer (which a
    /// busy session's events push status frames out of).
    status_version: Option<i64>,
}

/// The in-process event hub.
pub struct BroadcastHub {
    channels: Mutex<HashMap<SessionId, Channel>>,
    next_id: Mutex<u64>,
    buffer_len: usize,
    idle_ttl: Duration,
    sweep_every: Duration,
    last_sweep: Mutex<Instant>,
}

impl BroadcastHub {
    /// A hub keeping the last `buffer_len` frames of each session for resumption; observers
    /// more than that many frames behind are dropped and reconnect.
    pub fn new(buffer_len: usize) -> Self {
        let start = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
        Self {
            channels: Mutex::new(HashMap::new()),
            next_id: Mutex::new(u64::try_from(start).unwrap_or(1)),
            buffer_len: buffer_len.max(1),
            idle_ttl: Duration::from_secs(600),
            sweep_every: Duration::from_secs(30),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Drops a session's buffer after `idle_ttl` without observers or frames, checking at most
    /// every `sweep_every`.
    pub fn with_idle_ttl(mut self, idle_ttl: Duration, sweep_every: Duration) -> Self {
        self.idle_ttl = idle_ttl;
        self.sweep_every = sweep_every;
        self
    }

    /// How many sessions have a buffer now.
    pub fn buffered_sessions(&self) -> usize {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn channel<'a>(&self, map: &'a mut HashMap<SessionId, Channel>, id: SessionId) -> &'a mut Channel {
        let ch = map.entry(id).or_insert_with(|| Channel {
            touched: Instant::now(),
            tx: None,
            buffer: VecDeque::new(),
            status_version: None,
        });
        ch.touched = Instant::now();
        ch
    }

    /// Publishes under the lock the caller holds (having swept first).
    fn publish_locked(&self, map: &mut HashMap<SessionId, Channel>, session: SessionId, data: FrameData) -> u64 {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            *next += 1;
            *next
        };
        let frame = Frame { id, data };
        let buffer_len = self.buffer_len;
        let ch = self.channel(map, session);
        if ch.buffer.len() == buffer_len {
            ch.buffer.pop_front();
        }
        ch.buffer.push_back(frame.clone());
        if let Some(tx) = &ch.tx {
            if tx.receiver_count() == 0 {
                ch.tx = None;
            } else {
                let _ = tx.send(frame);
            }
        }
        id
    }

    /// Drops the buffers of sessions idle for the TTL (amortised: at most every `sweep_every`).
    fn sweep(&self, map: &mut HashMap<SessionId, Channel>) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(PoisonError::into_inner);
            if now.duration_since(*last) < self.sweep_every {
                return;
            }
            *last = now;
        }
        let ttl = self.idle_ttl;
        map.retain(|_, ch| {
            if ch.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0) {
                ch.touched = now;
                return true;
            }
            now.duration_since(ch.touched) < ttl
        });
    }
}

impl Default for BroadcastHub {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventHub for BroadcastHub {
    fn publish(&self, session: SessionId, data: FrameData) -> u64 {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweep(&mut map);
        self.publish_locked(&mut map, session, data)
    }

    fn publish_status(&self, status: Box<Session>) -> Option<u64> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweep(&mut map);
        let ch = self.channel(&mut map, status.id);
        if ch.status_version.is_some_and(|v| v >= status.version) {
            return None;
        }
        ch.status_version = Some(status.version);
        Some(self.publish_locked(&mut map, status.id, FrameData::Status(status)))
    }

    fn subscribe(&self, session: SessionId, last_event_id: Option<u64>) -> Subscription {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        self.sweep(&mut map);
        let ch = self.channel(&mut map, session);
        // Subscribing under the lock means no frame falls between backlog and live.
        let buffer_len = self.buffer_len;
        let rx = ch.tx.get_or_insert_with(|| broadcast::channel(buffer_len).0).subscribe();
        let last_id = ch.buffer.back().map(|f| f.id).unwrap_or(0);
        let backlog = match last_event_id {
            Some(after) => ch.buffer.iter().filter(|f| f.id > after).cloned().collect(),
            None => Vec::new(),
        };
        // A lagging observer's stream ends; it reconnects with Last-Event-ID and resumes.
        let live = BroadcastStream::new(rx)
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()))
            .boxed();
        Subscription { backlog, last_id, live }
    }

    fn close(&self, session: SessionId) {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).remove(&session);
    }

    fn is_observed(&self, session: SessionId) -> bool {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&session).and_then(|ch| ch.tx.as_ref()).is_some_and(|tx| tx.receiver_count() > 0)
    }

    fn observed(&self) -> Vec<SessionId> {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|(_, ch)| ch.tx.as_ref().is_some_and(|tx| tx.receiver_count() > 0))
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use serde_json::json;
    use std::sync::Arc;

    fn ev(n: i64) -> FrameData {
        FrameData::OpenCode(Arc::new(json!({"n": n})))
    }

    #[tokio::test]
    async fn fans_out_and_resumes() {
        let hub = BroadcastHub::new(3);
        let s = SessionId(uuid::Uuid::new_v4());
        let mut a = hub.subscribe(s, None);
        let mut b = hub.subscribe(s, None);
        let mut ids: Vec<u64> = (0..3).map(|n| hub.publish(s, ev(n))).collect();
        for &id in &ids {
            assert_eq!(a.live.next().await.unwrap().id, id);
            assert_eq!(b.live.next().await.unwrap().id, id);
        }
        ids.extend((3..5).map(|n| hub.publish(s, ev(n))));
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        // Resume after the third frame: the buffer (3 frames) still has 4 and 5.
        let r = hub.subscribe(s, Some(ids[2]));
        assert_eq!(r.backlog.iter().map(|f| f.id).collect::<Vec<_>>(), vec![ids[3], ids[4]]);
        assert_eq!(r.last_id, ids[4]);
        // Other sessions see nothing.
        let other = hub.subscribe(SessionId(uuid::Uuid::new_v4()), Some(0));
        assert!(other.backlog.is_empty());
    }

    #[tokio::test]
    async fn a_lagging_observer_is_dropped_to_resume() {
        let hub = BroadcastHub::new(2);
        let s = SessionId(uuid::Uuid::new_v4());
        let mut slow = hub.subscribe(s, None);
        for n in 0..5 {
            hub.publish(s, ev(n));
        }
        assert!(slow.live.next().await.is_none(), "it reconnects with Last-Event-ID instead");
    }

    #[tokio::test]
    async fn close_ends_streams() {
        let hub = BroadcastHub::new(8);
        let s = SessionId(uuid::Uuid::new_v4());
        let mut a = hub.subscribe(s, None);
        hub.close(s);
        assert!(a.live.next().await.is_none());
    }

    #[tokio::test]
    async fn idle_buffers_are_dropped_but_observed_ones_stay() {
        let hub = BroadcastHub::new(8).with_idle_ttl(Duration::from_millis(50), Duration::ZERO);
        let (watched, idle) = (SessionId(uuid::Uuid::from_u128(1)), SessionId(uuid::Uuid::from_u128(2)));
        let sub = hub.subscribe(watched, None);
        hub.publish(watched, ev(1));
        hub.publish(idle, ev(1));
        assert_eq!(hub.buffered_sessions(), 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Any publish sweeps: the idle session's buffer goes, the observed one's stays.
        hub.publish(watched, ev(2));
        assert_eq!(hub.buffered_sessions(), 1);
        assert!(hub.is_observed(watched) && !hub.is_observed(idle));
        drop(sub);
        tokio::time::sleep(Duration::from_millis(80)).await;
        hub.publish(idle, ev(3));
        assert_eq!(hub.buffered_sessions(), 1, "only the session just published to");
    }

    fn status(version: i64) -> Box<Session> {
        Box::new(Session {
            id: SessionId(uuid::Uuid::from_u128(9)),
            title: format!("v{version}"),
            visibility: cake_core::session::Visibility::Public,
            owner: cake_core::session::OwnerSummary {
                id: cake_core::user::UserId(uuid::Uuid::from_u128(1)),
                name: "o".into(),
                email: "o@example.com".into(),
            },
            status: cake_core::session::Status::Ready,
            activity: cake_core::session::Activity::Idle,
            status_reason: None,
            version,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        })
    }

    #[tokio::test]
    async fn status_frames_only_move_forward_even_when_events_push_them_out_of_the_buffer() {
        let hub = BroadcastHub::new(2);
        let id = SessionId(uuid::Uuid::from_u128(9));
        let mut sub = hub.subscribe(id, None);
        let mut titles = Vec::new();
        let mut drain = |sub: &mut Subscription| {
            while let Some(Some(f)) = sub.live.next().now_or_never() {
                if let FrameData::Status(s) = f.data {
                    titles.push(s.title.clone());
                }
            }
        };
        assert!(hub.publish_status(status(3)).is_some());
        assert!(hub.publish_status(status(3)).is_none(), "the same version twice");
        assert!(hub.publish_status(status(2)).is_none(), "an older version");
        drain(&mut sub);
        for n in 0..5 {
            hub.publish(id, ev(n));
            drain(&mut sub);
        }
        assert!(hub.publish_status(status(3)).is_none(), "still known after the buffer moved on");
        assert!(hub.publish_status(status(4)).is_some());
        drain(&mut sub);
        assert_eq!(titles, ["v3", "v4"]);
    }
}
