//! Credentials users link to their account (GitHub tokens) and what the broker hands a
//! session's runtime: DESIGN.md "Credential brokering", seed 000.
//!
//! A linked credential's secret exists in the domain only as a [`SecretString`] on its way in
//! or out (never `Debug`-printed, never serialised); the store keeps ciphertext only. A
//! session's runtime never holds the credential itself: it holds a per-session broker token
//! and asks the control plane, through `cake git-credential`, for the credential of one host,
//! which is answered only while the session lives and only for hosts the owner granted.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::CoreError;
use crate::session::SessionId;
use crate::user::UserId;

/// A linked credential's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CredentialId(pub Uuid);

/// What kind of account a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A GitHub (or GitHub Enterprise) token: a fine-grained or classic personal access
    /// token, or a GitHub App user token. Git uses it as the password of `x-access-token`.
    GitHub,
}

impl CredentialKind {
    /// The stored and API spelling (`github`).
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::GitHub => "github",
        }
    }

    /// Parses the stored and API spelling.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "github" => Ok(CredentialKind::GitHub),
            other => Err(CoreError::invalid("kind", format!("unknown credential kind {other:?}; known: github"))),
        }
    }

    /// The hosts a credential of this kind serves when the user names none.
    pub fn default_hosts(self) -> Vec<GitHost> {
        match self {
            CredentialKind::GitHub => vec![GitHost("github.com".into())],
        }
    }

    /// The user name git sends with the token.
    pub fn git_username(self) -> &'static str {
        match self {
            CredentialKind::GitHub => "x-access-token",
        }
    }
}

/// A host git asks credentials for: a lower-cased DNS name or IP literal with an optional
/// port (`github.com`, `ghe.example.com:8443`). No scheme, path, user info or wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GitHost(String);

impl GitHost {
    /// Parses and lower-cases a host.
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        let s = raw.trim().to_ascii_lowercase();
        let bad = |p: &str| Err(CoreError::invalid("hosts", format!("{raw:?} {p}")));
        if s.is_empty() || s.len() > 253 {
            return bad("must be 1 to 253 characters");
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => (name, Some(port)),
            _ => (s.as_str(), None),
        };
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
        {
            return bad("has an invalid port");
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return bad("must be a host name such as github.com (no scheme, path or wildcard)");
        }
        Ok(Self(s))
    }

    /// The normalised form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GitHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The most hosts one credential may serve.
pub const MAX_HOSTS: usize = 16;
/// The most credentials one session may be granted.
pub const MAX_GRANTS: usize = 16;
/// The longest secret accepted (GitHub tokens are well under 300 characters).
pub const MAX_SECRET_LEN: usize = 4096;

/// Parses a credential's secret: printable ASCII without spaces, as tokens are, so it can
/// travel in git's line-based credential protocol without breaking it.
pub fn parse_secret(raw: SecretString) -> Result<SecretString, CoreError> {
    use secrecy::ExposeSecret;
    let s = raw.expose_secret();
    if s.is_empty() || s.len() > MAX_SECRET_LEN {
        return Err(CoreError::invalid("token", format!("must be 1 to {MAX_SECRET_LEN} characters")));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CoreError::invalid("token", "must be printable ASCII without spaces or line breaks"));
    }
    Ok(raw)
}

/// Parses a list of hosts (empty or absent: the kind's defaults), de-duplicated and sorted.
pub fn parse_hosts(kind: CredentialKind, raw: Option<&[String]>) -> Result<Vec<GitHost>, CoreError> {
    let mut hosts = match raw {
        None | Some([]) => kind.default_hosts(),
        Some(list) => list.iter().map(|h| GitHost::parse(h)).collect::<Result<Vec<_>, _>>()?,
    };
    hosts.sort();
    hosts.dedup();
    if hosts.len() > MAX_HOSTS {
        return Err(CoreError::invalid("hosts", format!("at most {MAX_HOSTS} hosts")));
    }
    Ok(hosts)
}

/// A credential a user linked, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedCredential {
    /// Id.
    pub id: CredentialId,
    /// Whose it is.
    pub owner: UserId,
    /// What kind.
    pub kind: CredentialKind,
    /// The hosts git may use it for.
    pub hosts: Vec<GitHost>,
    /// When it was first linked.
    pub created_at: OffsetDateTime,
    /// When its secret or hosts last changed.
    pub updated_at: OffsetDateTime,
}

/// A stored credential with its sealed secret, as the broker reads it.
#[derive(Debug, Clone)]
pub struct SealedCredential {
    /// The credential.
    pub credential: LinkedCredential,
    /// The secret, encrypted by the [`crate::ports::SecretCipher`].
    pub ciphertext: Vec<u8>,
}

/// What the broker knows about the session behind a broker token.
#[derive(Debug, Clone)]
pub struct BrokerGrant {
    /// The session.
    pub session_id: SessionId,
    /// Its owner.
    pub owner: UserId,
    /// Whether the session is still live (provisioning, starting or ready).
    pub live: bool,
    /// The credentials the owner granted it, still linked.
    pub credentials: Vec<SealedCredential>,
}

/// What git asks a credential helper (`git credential fill`): a protocol and a host, and a
/// path when `credential.useHttpPath` is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCredentialRequest {
    /// `https` (the broker answers nothing else: a token must not travel in clear).
    pub protocol: String,
    /// The host, as git sends it (with a port when the URL has one).
    pub host: String,
    /// The repository path, if git sends one.
    pub path: Option<String>,
}

/// A credential for git: a user name and the token as password.
pub struct GitCredential {
    /// The user name (`x-access-token` for GitHub).
    pub username: String,
    /// The token.
    pub password: SecretString,
}

impl fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCredential").field("username", &self.username).finish_non_exhaustive()
    }
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A user linked or replaced a credential.
    CredentialLinked,
    /// A user unlinked a credential.
    CredentialUnlinked,
    /// A credential was granted to a session at its creation.
    CredentialGranted,
    /// A session's runtime received a credential from the broker.
    BrokerIssued,
    /// A broker call was refused (no granted credential for the host, session ended, http).
    BrokerDenied,
}

impl AuditAction {
    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::CredentialLinked => "credential.linked",
            AuditAction::CredentialUnlinked => "credential.unlinked",
            AuditAction::CredentialGranted => "credential.granted",
            AuditAction::BrokerIssued => "broker.issued",
            AuditAction::BrokerDenied => "broker.denied",
        }
    }
}

/// One audit record to write.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// What happened.
    pub action: AuditAction,
    /// The user who acted (for broker calls: the session's owner).
    pub actor: Option<UserId>,
    /// The session concerned.
    pub session: Option<SessionId>,
    /// The credential concerned.
    pub credential: Option<CredentialId>,
    /// Non-secret details (`{"host": "github.com"}`, a refusal's reason).
    pub detail: serde_json::Value,
}

/// One stored audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Increasing id (the list's cursor).
    pub id: i64,
    /// When.
    pub at: OffsetDateTime,
    /// What happened (the [`AuditAction`] spelling).
    pub action: String,
    /// The user who acted.
    pub actor: Option<UserId>,
    /// The session concerned.
    pub session: Option<SessionId>,
    /// The credential concerned.
    pub credential: Option<CredentialId>,
    /// Non-secret details.
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_normalise() {
        assert_eq!(GitHost::parse(" GitHub.com ").unwrap().as_str(), "github.com");
        assert_eq!(GitHost::parse("ghe.example.com:8443").unwrap().as_str(), "ghe.example.com:8443");
        assert_eq!(GitHost::parse("127.0.0.1").unwrap().as_str(), "127.0.0.1");
        for bad in
            ["", "https://github.com", "github.com/org", "*.github.com", "a b", "x:0", "x:99999", "-a.com", "a..b"]
        {
            assert!(GitHost::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn hosts_default_dedupe_and_limit() {
        let hosts = parse_hosts(CredentialKind::GitHub, None).unwrap();
        assert_eq!(hosts, vec![GitHost("github.com".into())]);
        let hosts =
            parse_hosts(CredentialKind::GitHub, Some(&["b.com".into(), "A.com".into(), "a.com".into()])).unwrap();
        assert_eq!(hosts.iter().map(GitHost::as_str).collect::<Vec<_>>(), ["a.com", "b.com"]);
        let many: Vec<String> = (0..=MAX_HOSTS).map(|i| format!("h{i}.com")).collect();
        assert!(parse_hosts(CredentialKind::GitHub, Some(&many)).is_err());
    }

    #[test]
    fn secrets_must_fit_the_git_protocol() {
        assert!(parse_secret(SecretString::from("ghp_abc123")).is_ok());
        for bad in ["", "with space", "line\nbreak", "tab\t", "é"] {
            assert!(parse_secret(SecretString::from(bad)).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_secret(SecretString::from("x".repeat(MAX_SECRET_LEN + 1))).is_err());
    }

    #[test]
    fn git_credential_debug_hides_the_token() {
        let c = GitCredential { username: "x-access-token".into(), password: SecretString::from("ghp_secret") };
        assert!(!format!("{c:?}").contains("ghp_secret"));
    }
}
