//! Sessions: the user-facing unit of work, each with one OpenCode runtime behind it (seed 000).
//!
//! # State machine
//!
//! ```text
//! provisioning ──► starting ──► ready
//!      │              │           │
//!      └──────────────┴───────────┴──► failed (with a reason)
//! any state ──► deleting ──► (row removed)
//! failed ──► provisioning   (only when the control plane brings a session back)
//! ```
//!
//! [`Status::transition`] is the only place that knows which moves are legal.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::CoreError;
use crate::user::UserId;

/// A session's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub Uuid);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A session title: trimmed, at most 200 characters, no control characters. An absent or blank
/// title becomes [`Title::untitled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// Longest accepted title, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Parses a title given by a user.
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(CoreError::invalid("title", "must not be blank"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(CoreError::invalid("title", format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        if s.chars().any(char::is_control) {
            return Err(CoreError::invalid("title", "must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The title of a session created without one.
    pub fn untitled() -> Self {
        Self("Untitled session".to_owned())
    }

    /// Parses an optional title, defaulting to [`Title::untitled`] when absent.
    pub fn parse_optional(raw: Option<&str>) -> Result<Self, CoreError> {
        match raw {
            None => Ok(Self::untitled()),
            Some(s) => Self::parse(s),
        }
    }
}

impl AsRef<str> for Title {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A prompt for the agent: non-empty, at most 100,000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptText(String);

impl PromptText {
    /// Longest accepted prompt, in characters.
    pub const MAX_CHARS: usize = 100_000;

    /// Parses a prompt; `field` names it in the error (`text` or `initialUserPrompt`).
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, CoreError> {
        if raw.trim().is_empty() {
            return Err(CoreError::invalid(field, "must not be blank"));
        }
        if raw.contains('\0') {
            return Err(CoreError::invalid(field, "must not contain NUL characters"));
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(CoreError::invalid(field, format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl AsRef<str> for PromptText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Who can see a session (`public` or `private` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed and observable by everyone signed in.
    Public,
    /// Visible only to the owner; others get 404.
    Private,
}

impl Visibility {
    /// `true` for [`Visibility::Private`].
    pub fn is_private(self) -> bool {
        self == Visibility::Private
    }

    /// From the API's `private` flag.
    pub fn from_private(private: bool) -> Self {
        if private { Visibility::Private } else { Visibility::Public }
    }
}

/// Where a session is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created; the runtime is being provisioned.
    Provisioning,
    /// The runtime exists; OpenCode is starting.
    Starting,
    /// OpenCode answers; prompts can be sent.
    Ready,
    /// The runtime failed; `status_reason` says why.
    Failed,
    /// Being torn down; the row disappears when done.
    Deleting,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 5] =
        [Status::Provisioning, Status::Starting, Status::Ready, Status::Failed, Status::Deleting];

    /// The stored and serialised spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Provisioning => "provisioning",
            Status::Starting => "starting",
            Status::Ready => "ready",
            Status::Failed => "failed",
            Status::Deleting => "deleting",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| CoreError::invalid("status", format!("unknown status {s:?}")))
    }

    /// Whether a runtime is (or should be) behind the session.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Provisioning | Status::Starting | Status::Ready)
    }

    /// Checks a move of the state machine and returns the new status.
    pub fn transition(self, to: Status) -> Result<Status, CoreError> {
        use Status::*;
        let ok = match (self, to) {
            (Provisioning, Starting) | (Starting, Ready) => true,
            (Provisioning | Starting | Ready, Failed) => true,
            // A control plane that restarts brings live or failed sessions back.
            (Ready | Starting | Failed, Provisioning) => true,
            (Failed, Failed) => true,
            (Deleting, Deleting) => true,
            (_, Deleting) => true,
            _ => false,
        };
        if ok {
            Ok(to)
        } else {
            Err(CoreError::Conflict {
                code: "invalid_state",
                message: format!("a {} session cannot become {}", self.as_str(), to.as_str()),
            })
        }
    }
}

/// What the agent is doing; meaningful while [`Status::Ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    /// Waiting for a prompt.
    Idle,
    /// Working on a prompt.
    Busy,
    /// Retrying after a provider error (e.g. HTTP 429).
    Retry,
}

impl Activity {
    /// The stored and serialised spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Idle => "idle",
            Activity::Busy => "busy",
            Activity::Retry => "retry",
        }
    }

    /// Parses the stored spelling (and OpenCode's `session.status` `type`).
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "idle" => Ok(Activity::Idle),
            "busy" => Ok(Activity::Busy),
            "retry" => Ok(Activity::Retry),
            other => Err(CoreError::invalid("activity", format!("unknown activity {other:?}"))),
        }
    }
}

/// The owner of a session as shown to anyone who may see the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSummary {
    /// The owner's id.
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// A Cake session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Id.
    pub id: SessionId,
    /// Title.
    pub title: String,
    /// Who can see it.
    pub visibility: Visibility,
    /// The owner.
    pub owner: OwnerSummary,
    /// Lifecycle state.
    pub status: Status,
    /// What the agent is doing.
    pub activity: Activity,
    /// Why the session failed, or what it is waiting on.
    pub status_reason: Option<String>,
    /// Optimistic-concurrency version, bumped by every update.
    pub version: i64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last update.
    pub updated_at: OffsetDateTime,
}

/// Everything the control plane remembers about a session's runtime, beyond what users see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeState {
    /// The adapter's opaque handle (JSON), persisted so a restarted control plane finds it.
    pub handle: Option<serde_json::Value>,
    /// The OpenCode session id (`ses_…`) inside the runtime.
    pub opencode_session_id: Option<String>,
    /// A first prompt not yet delivered to OpenCode; cleared once sent, so nothing is lost
    /// when the control plane restarts while a session is provisioning.
    pub pending_prompt: Option<String>,
}

/// Which sessions a listing returns (DESIGN.md, `GET /api/sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFilter {
    /// The caller's own sessions plus everyone's public ones.
    #[default]
    All,
    /// Public sessions of anyone.
    Public,
    /// The caller's own private sessions.
    Private,
}

/// A keyset-pagination position: the last item of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last item, in microseconds since the epoch.
    pub created_at_us: i64,
    /// Its id, the tie-breaker.
    pub id: SessionId,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at_us, self.id.0.simple())
    }

    /// Parses the text form; anything else is a 400.
    pub fn decode(s: &str) -> Result<Self, CoreError> {
        let bad = || CoreError::invalid("cursor", "is not a cursor returned by this API");
        let (ts, id) = s.split_once('_').ok_or_else(bad)?;
        let created_at_us: i64 = ts.parse().map_err(|_| bad())?;
        // Within what PostgreSQL's timestamptz holds (years 1 to 9999 are plenty).
        if !(-62_135_596_800_000_000..=253_402_300_799_999_999).contains(&created_at_us) {
            return Err(bad());
        }
        Ok(Self { created_at_us, id: SessionId(Uuid::parse_str(id).map_err(|_| bad())?) })
    }

    /// The cursor pointing after `session`.
    pub fn after(session: &Session) -> Self {
        Self { created_at_us: (session.created_at.unix_timestamp_nanos() / 1_000) as i64, id: session.id }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The sessions, newest first.
    pub items: Vec<Session>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<Cursor>,
}

/// A page size between 1 and 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    /// The default page size.
    pub const DEFAULT: Limit = Limit(50);

    /// Parses a page size.
    pub fn parse(n: i64) -> Result<Self, CoreError> {
        if (1..=200).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(CoreError::invalid("limit", "must be between 1 and 200"))
        }
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A reply to an OpenCode permission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionReply {
    /// Allow this once.
    Once,
    /// Allow from now on.
    Always,
    /// Refuse.
    Reject,
}

impl PermissionReply {
    /// OpenCode's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionReply::Once => "once",
            PermissionReply::Always => "always",
            PermissionReply::Reject => "reject",
        }
    }
}

/// An OpenCode permission request id (`per_…`): letters, digits, `_` and `-`, at most 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionId(String);

impl PermissionId {
    /// Parses a permission id so it can be put into an upstream path safely.
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        if raw.is_empty() || raw.len() > 100 || !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(CoreError::invalid("permissionId", "is not a permission id"));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl AsRef<str> for PermissionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_transitions() {
        use Status::*;
        let legal = [
            (Provisioning, Starting),
            (Starting, Ready),
            (Provisioning, Failed),
            (Starting, Failed),
            (Ready, Failed),
            (Failed, Failed),
            (Ready, Provisioning),
            (Starting, Provisioning),
            (Failed, Provisioning),
            (Provisioning, Deleting),
            (Starting, Deleting),
            (Ready, Deleting),
            (Failed, Deleting),
            (Deleting, Deleting),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.transition(to).is_ok(), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn deleting_is_terminal() {
        for to in [Status::Provisioning, Status::Starting, Status::Ready, Status::Failed] {
            assert!(Status::Deleting.transition(to).is_err());
        }
    }

    #[test]
    fn title_rules() {
        assert!(Title::parse("  ").is_err());
        assert!(Title::parse(&"t".repeat(201)).is_err());
        assert!(Title::parse("a\nb").is_err());
        assert_eq!(Title::parse(" Fix CI ").unwrap().as_ref(), "Fix CI");
        assert_eq!(Title::parse_optional(None).unwrap(), Title::untitled());
    }

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = Cursor { created_at_us: 1_700_000_000_123_456, id: SessionId(Uuid::new_v4()) };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in [
            "",
            "x",
            "1_",
            "_abc",
            "12_notauuid",
            "x_00000000000000000000000000000000",
            "-9223372036854775808_00000000000000000000000000000000",
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limit_bounds() {
        assert!(Limit::parse(0).is_err());
        assert!(Limit::parse(201).is_err());
        assert_eq!(Limit::parse(200).unwrap().get(), 200);
    }

    #[test]
    fn permission_id_is_path_safe() {
        assert!(PermissionId::parse("per_abc-123").is_ok());
        for bad in ["", "../config", "a/b", "a%2fb", "a b"] {
            assert!(PermissionId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prompt_rules() {
        assert!(PromptText::parse("text", " ").is_err());
        assert!(PromptText::parse("text", "hi").is_ok());
        assert!(PromptText::parse("text", "a\0b").is_err());
    }
}
