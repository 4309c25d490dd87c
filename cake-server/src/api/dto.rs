//! Request and response bodies of the HTTP contract (DESIGN.md), camelCase on the wire.

use cake_core::ports::ApiToken;
use cake_core::session::{Activity, Session, Status};
use cake_core::user::{Role, User};
use poem_openapi::{Enum, Object};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::strict::Str;

/// Formats a time as RFC 3339.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A user's role.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RoleDto {
    /// Configures the installation.
    Admin,
    /// Everyone else.
    Member,
}

/// A user.
#[derive(Debug, Clone, Object)]
#[oai(rename = "User", rename_all = "camelCase")]
pub struct UserDto {
    /// Id.
    pub id: Uuid,
    /// Email (lower-cased).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: RoleDto,
    /// RFC 3339.
    pub created_at: String,
}

impl From<User> for UserDto {
    fn from(u: User) -> Self {
        Self {
            id: u.id.0,
            email: u.email,
            name: u.name,
            role: match u.role {
                Role::Admin => RoleDto::Admin,
                Role::Member => RoleDto::Member,
            },
            created_at: rfc3339(u.created_at),
        }
    }
}

/// `POST /api/auth/sign-up/email`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignUpBody {
    /// Email.
    pub email: Str,
    /// 8 to 128 characters.
    #[oai(write_only)]
    pub password: Str,
    /// Display name.
    pub name: Str,
}

/// `POST /api/auth/sign-in/email`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignInBody {
    /// Email.
    pub email: Str,
    /// Password.
    #[oai(write_only)]
    pub password: Str,
}

/// `POST /api/auth/sign-in/oauth2` (Better Auth's generic OAuth plugin). Other fields Better
/// Auth clients send are accepted and ignored.
#[derive(Debug, Object)]
pub struct OAuth2SignInBody {
    /// The provider's id (`CAKE_OIDC_PROVIDER_ID`).
    #[oai(rename = "providerId")]
    pub provider_id: Str,
    /// Where to land after signing in: a path on this site (default `/`) or a URL on its
    /// public origin.
    #[oai(rename = "callbackURL")]
    pub callback_url: Option<Str>,
}

/// Where to send the browser to sign in.
#[derive(Debug, Object)]
pub struct OAuth2SignInResponse {
    /// The provider's authorization URL.
    pub url: String,
    /// Always true: the client should navigate to `url`.
    pub redirect: bool,
}

/// A successful sign-up or sign-in (Better Auth's shape).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct AuthResponse {
    /// The session token (also set as the signed cookie).
    pub token: String,
    /// Who signed in.
    pub user: UserDto,
}

/// A browser session.
#[derive(Debug, Object)]
#[oai(rename = "AuthSession", rename_all = "camelCase")]
pub struct AuthSessionDto {
    /// Id.
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// RFC 3339.
    pub expires_at: String,
}

/// `GET /api/auth/get-session`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct SessionAndUser {
    /// The browser session.
    pub session: AuthSessionDto,
    /// Its user.
    pub user: UserDto,
}

/// `POST /api/auth/sign-out`.
#[derive(Debug, Object)]
pub struct SuccessBody {
    /// Always true.
    pub success: bool,
}

/// `POST /api/me/tokens`.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct CreateTokenBody {
    /// A name to recognise the token by (1 to 100 characters).
    pub name: Str,
}

/// A new API token; `token` is shown this once.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CreatedToken {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// The secret, `cake_…`; send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// RFC 3339.
    pub created_at: String,
}

/// An API token (never its value).
#[derive(Debug, Object)]
#[oai(rename = "ApiToken", rename_all = "camelCase")]
pub struct TokenDto {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, or null if never used.
    pub last_used_at: Option<String>,
}

impl From<ApiToken> for TokenDto {
    fn from(t: ApiToken) -> Self {
        Self { id: t.id, name: t.name, created_at: rfc3339(t.created_at), last_used_at: t.last_used_at.map(rfc3339) }
    }
}

/// Model providers in OpenCode's own format (DESIGN.md, "Model providers").
#[derive(Debug, Object)]
#[oai(rename = "ProviderSettings", rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvidersDto {
    /// Provider id → OpenCode provider object (`npm`, `name`, `options.baseURL`,
    /// `options.apiKey`, `options.headers`, `models`). Secrets read back as `%%SECRET%%`;
    /// sending `%%SECRET%%` keeps the stored value.
    pub providers: std::collections::BTreeMap<String, serde_json::Value>,
    /// `<providerId>/<modelId>` that sessions use.
    pub default_model: Str,
    /// Optional OpenCode `permission` config for every session, e.g. `{"bash": "ask"}`.
    pub permission: Option<serde_json::Value>,
}

/// A session's lifecycle state.
#[derive(Debug, Clone, Copy, Enum, serde::Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum StatusDto {
    /// The runtime is being provisioned.
    Provisioning,
    /// OpenCode is starting.
    Starting,
    /// Prompts can be sent.
    Ready,
    /// See `statusReason`.
    Failed,
    /// Being torn down.
    Deleting,
}

/// What the agent is doing (meaningful when ready).
#[derive(Debug, Clone, Copy, Enum, serde::Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum ActivityDto {
    /// Waiting for a prompt.
    Idle,
    /// Working.
    Busy,
    /// Retrying after a provider error.
    Retry,
}

/// A session's owner.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "Owner")]
pub struct OwnerDto {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// A Cake session.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "Session", rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct SessionDto {
    /// Id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Visible only to the owner.
    pub private: bool,
    /// The owner's id.
    pub owner_id: Uuid,
    /// The owner.
    pub owner: OwnerDto,
    /// Lifecycle state.
    pub status: StatusDto,
    /// What the agent is doing.
    pub activity: ActivityDto,
    /// Why the session failed (or what it waits on); null otherwise.
    pub status_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<&Session> for SessionDto {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id.0,
            title: s.title.clone(),
            private: s.visibility.is_private(),
            owner_id: s.owner.id.0,
            owner: OwnerDto { id: s.owner.id.0, name: s.owner.name.clone(), email: s.owner.email.clone() },
            status: match s.status {
                Status::Provisioning => StatusDto::Provisioning,
                Status::Starting => StatusDto::Starting,
                Status::Ready => StatusDto::Ready,
                Status::Failed => StatusDto::Failed,
                Status::Deleting => StatusDto::Deleting,
            },
            activity: match s.activity {
                Activity::Idle => ActivityDto::Idle,
                Activity::Busy => ActivityDto::Busy,
                Activity::Retry => ActivityDto::Retry,
            },
            status_reason: s.status_reason.clone(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// `POST /api/sessions` (Cake's body).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionBody {
    /// Optional title (at most 200 characters).
    pub title: Option<Str>,
    /// Required: whether only the owner can see the session.
    pub private: bool,
    /// Sent to the agent as soon as the runtime is ready.
    pub initial_user_prompt: Option<Str>,
    /// Ids of your own linked credentials (`GET /api/me/credentials`) the session's runtime may
    /// use: git in the session gets them through `cake git-credential`, for their hosts only,
    /// while the session lives. Omitted or empty: none.
    pub credentials: Option<Vec<Str>>,
}

/// `PATCH /api/sessions/{id}`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchSessionBody {
    /// New title.
    pub title: Option<Str>,
    /// New visibility.
    pub private: Option<bool>,
}

/// One page of sessions, newest first.
#[derive(Debug, Object, serde::Serialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    /// The sessions.
    pub items: Vec<SessionDto>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Which sessions to list.
#[derive(Debug, Clone, Copy, Enum, Default)]
#[oai(rename_all = "lowercase")]
pub enum VisibilityFilter {
    /// Your own sessions plus everyone's public ones.
    #[default]
    All,
    /// Public sessions of anyone.
    Public,
    /// Your own private sessions.
    Private,
}

/// `POST /api/sessions/{id}/messages`.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct MessageBody {
    /// The prompt.
    pub text: Str,
}

/// A reply to a permission request.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ReplyDto {
    /// Allow this once.
    Once,
    /// Allow from now on.
    Always,
    /// Refuse.
    Reject,
}

/// `POST /api/sessions/{id}/permissions/{permissionId}`.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct PermissionBody {
    /// The answer.
    pub reply: ReplyDto,
}

/// `GET /api/health`.
#[derive(Debug, Object)]
pub struct HealthBody {
    /// `ok`.
    pub status: String,
}

/// One frame of `GET /api/sessions/{id}/events`: sent as SSE with `id:` = `id`,
/// `event:` = `event` (`status` or `opencode`) and `data:` = `data` as JSON.
#[derive(Debug, Clone, Object)]
pub struct EventFrame {
    /// Strictly increasing; reconnect with `Last-Event-ID` to resume after it.
    pub id: u64,
    /// `status` (data: a Session) or `opencode` (data: one OpenCode event `{type, properties}`).
    pub event: String,
    /// The payload.
    pub data: serde_json::Value,
}

/// A credential linked to your account. Its secret is never returned.
#[derive(Debug, Object)]
#[oai(rename = "Credential", rename_all = "camelCase")]
pub struct CredentialDto {
    /// Id (name it in `credentials` when creating a session).
    pub id: Uuid,
    /// `github`.
    pub kind: String,
    /// The hosts git may use it for, e.g. `github.com`.
    pub hosts: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: when the secret or hosts last changed.
    pub updated_at: String,
}

impl From<cake_core::credential::LinkedCredential> for CredentialDto {
    fn from(c: cake_core::credential::LinkedCredential) -> Self {
        Self {
            id: c.id.0,
            kind: c.kind.as_str().to_owned(),
            hosts: c.hosts.iter().map(|h| h.as_str().to_owned()).collect(),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

/// `PUT /api/me/credentials/github`. No `Debug`: it holds a secret.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct LinkGitHubBody {
    /// A GitHub token: fine-grained or classic personal access token, or a GitHub App user
    /// token (printable ASCII, at most 4096 characters). Stored encrypted, never shown again.
    #[oai(write_only)]
    pub token: Str,
    /// Hosts it is for (default `["github.com"]`; a GitHub Enterprise host such as
    /// `ghe.example.com`). Host names only, optionally with a port.
    pub hosts: Option<Vec<Str>>,
}

/// `POST /api/broker/git-credential`: what git asks its credential helper.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct GitCredentialQuery {
    /// `https` (nothing else is answered).
    pub protocol: Str,
    /// The host, with a port when the URL has one.
    pub host: Str,
    /// The repository path, when git sends one (`credential.useHttpPath`).
    pub path: Option<Str>,
}

/// A credential for git. No `Debug`: it holds a secret.
#[derive(Object)]
pub struct GitCredentialDto {
    /// The user name (`x-access-token` for GitHub).
    pub username: String,
    /// The token.
    pub password: String,
}

/// One audit record: a credential linked, unlinked or granted, or a broker call.
#[derive(Debug, Object)]
#[oai(rename = "AuditEntry", rename_all = "camelCase")]
pub struct AuditEntryDto {
    /// Increasing id.
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// `credential.linked`, `credential.unlinked`, `credential.granted`, `broker.issued` or
    /// `broker.denied`.
    pub action: String,
    /// Who acted (for broker calls: the session's owner).
    pub actor_id: Option<Uuid>,
    /// The session concerned.
    pub session_id: Option<Uuid>,
    /// The credential concerned.
    pub credential_id: Option<Uuid>,
    /// Details, never a secret: the host asked for, a refusal's reason.
    pub detail: serde_json::Value,
}

impl From<cake_core::credential::AuditEntry> for AuditEntryDto {
    fn from(e: cake_core::credential::AuditEntry) -> Self {
        Self {
            id: e.id,
            at: rfc3339(e.at),
            action: e.action,
            actor_id: e.actor.map(|a| a.0),
            session_id: e.session.map(|s| s.0),
            credential_id: e.credential.map(|c| c.0),
            detail: e.detail,
        }
    }
}

/// A page of audit records, newest first.
#[derive(Debug, Object)]
#[oai(rename = "AuditPage", rename_all = "camelCase")]
pub struct AuditPage {
    /// The records.
    pub items: Vec<AuditEntryDto>,
    /// Pass as `before` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

/// A session visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "Visibility", rename_all = "lowercase")]
pub enum VisibilityDto {
    /// Listed and observable by everyone signed in.
    Public,
    /// Visible only to the owner.
    Private,
}

impl From<cake_core::session::Visibility> for VisibilityDto {
    fn from(v: cake_core::session::Visibility) -> Self {
        match v {
            cake_core::session::Visibility::Public => Self::Public,
            cake_core::session::Visibility::Private => Self::Private,
        }
    }
}

impl From<VisibilityDto> for cake_core::session::Visibility {
    fn from(v: VisibilityDto) -> Self {
        match v {
            VisibilityDto::Public => Self::Public,
            VisibilityDto::Private => Self::Private,
        }
    }
}

/// A user's default visibility per surface; `null` inherits the organisation's.
#[derive(Debug, Clone, Copy, Object)]
#[oai(rename = "VisibilityPreferences", rename_all = "camelCase", deny_unknown_fields)]
pub struct VisibilityPreferencesDto {
    /// Sessions started in the web UI.
    pub web: Option<VisibilityDto>,
    /// Sessions started from a Slack thread.
    pub slack_thread: Option<VisibilityDto>,
    /// Sessions started from a Slack direct message.
    pub slack_dm: Option<VisibilityDto>,
}

impl From<cake_core::settings::VisibilityPreferences> for VisibilityPreferencesDto {
    fn from(p: cake_core::settings::VisibilityPreferences) -> Self {
        Self {
            web: p.web.map(Into::into),
            slack_thread: p.slack_thread.map(Into::into),
            slack_dm: p.slack_dm.map(Into::into),
        }
    }
}

impl From<VisibilityPreferencesDto> for cake_core::settings::VisibilityPreferences {
    fn from(p: VisibilityPreferencesDto) -> Self {
        Self {
            web: p.web.map(Into::into),
            slack_thread: p.slack_thread.map(Into::into),
            slack_dm: p.slack_dm.map(Into::into),
        }
    }
}

/// The default visibility per surface, every one set.
#[derive(Debug, Clone, Copy, Object)]
#[oai(rename = "VisibilityDefaults", rename_all = "camelCase", deny_unknown_fields)]
pub struct VisibilityDefaultsDto {
    /// Sessions started in the web UI.
    pub web: VisibilityDto,
    /// Sessions started from a Slack thread.
    pub slack_thread: VisibilityDto,
    /// Sessions started from a Slack direct message.
    pub slack_dm: VisibilityDto,
}

impl From<cake_core::settings::VisibilityDefaults> for VisibilityDefaultsDto {
    fn from(d: cake_core::settings::VisibilityDefaults) -> Self {
        Self { web: d.web.into(), slack_thread: d.slack_thread.into(), slack_dm: d.slack_dm.into() }
    }
}

impl From<VisibilityDefaultsDto> for cake_core::settings::VisibilityDefaults {
    fn from(d: VisibilityDefaultsDto) -> Self {
        Self { web: d.web.into(), slack_thread: d.slack_thread.into(), slack_dm: d.slack_dm.into() }
    }
}

/// `GET`/`PUT /api/me/settings`.
#[derive(Debug, Object)]
#[oai(rename = "UserSettings", rename_all = "camelCase")]
pub struct UserSettingsDto {
    /// Your choices (`null`: the organisation's default).
    pub default_visibility: VisibilityPreferencesDto,
    /// What applies to you: your choices over the organisation's defaults (what a client
    /// preselects when starting a session).
    pub effective_default_visibility: VisibilityDefaultsDto,
}

impl From<cake_core::services::UserSettings> for UserSettingsDto {
    fn from(s: cake_core::services::UserSettings) -> Self {
        Self { default_visibility: s.preferences.into(), effective_default_visibility: s.effective.into() }
    }
}

/// `PUT /api/me/settings`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutUserSettingsBody {
    /// Your choices; a surface left out or `null` inherits the organisation's default.
    pub default_visibility: VisibilityPreferencesDto,
}

/// `GET`/`PUT /api/admin/settings`: the organisation's defaults.
#[derive(Debug, Object)]
#[oai(rename = "OrgSettings", rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgSettingsDto {
    /// The default visibility per surface (as Cake ships: web public, Slack threads public,
    /// Slack DMs private).
    pub default_visibility: VisibilityDefaultsDto,
}
