//! Users, roles and the actor behind a request.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::CoreError;

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserId(pub Uuid);

/// A syntactically valid, lower-cased email address. Exists only if it parsed, so nobody checks
/// it again; users are unique by this value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses and normalises (trim, lower-case) an email address.
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        let s = raw.trim().to_ascii_lowercase();
        let bad = |p: &str| Err(CoreError::invalid("email", p));
        if s.is_empty() {
            return bad("must not be empty");
        }
        if s.len() > 254 {
            return bad("must be at most 254 characters");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return bad("must contain '@'");
        };
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return bad("must look like name@example.com");
        }
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return bad("domain must contain a dot");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must not contain spaces");
        }
        // One spelling per address: PostgreSQL's lower() and ours must agree, so the address
        // is ASCII (internationalised addresses are not supported).
        if !s.is_ascii() {
            return bad("must be ASCII");
        }
        Ok(Self(s))
    }

    /// The domain part, after `@`.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// Parses a display name.
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(CoreError::invalid("name", "must not be empty"));
        }
        if s.chars().count() > 100 {
            return Err(CoreError::invalid("name", "must be at most 100 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(CoreError::invalid("name", "must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a user may administer. Admins configure providers and organisation defaults; they get
/// no view into other users' private sessions (DESIGN.md, permission model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Configures the installation.
    Admin,
    /// Everyone else.
    Member,
}

impl Role {
    /// The stored and serialised spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(CoreError::invalid("role", format!("unknown role {other:?}"))),
        }
    }
}

/// A user of the installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Unique, lower-cased email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Admin or member.
    pub role: Role,
    /// When the account was created.
    pub created_at: OffsetDateTime,
}

impl User {
    /// The actor this user acts as.
    pub fn actor(&self) -> Actor {
        Actor { id: self.id, role: self.role }
    }
}

/// The signed-in user on whose behalf a request runs. Anonymous requests have no actor
/// (`Option<&Actor>` is `None`), and the policy answers them with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// Who.
    pub id: UserId,
    /// With which role.
    pub role: Role,
}

impl Actor {
    /// Whether this actor administers the installation.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rejects_each_bad_input() {
        for bad in
            ["", "   ", "plain", "@example.com", "a@", "a@b@c.com", "a@nodot", "a@.com", "a@com.", "a b@example.com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn email_normalises_case_and_space() {
        let e = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(e.as_ref(), "alice@example.com");
        assert_eq!(e.domain(), "example.com");
    }

    #[test]
    fn user_name_limits() {
        assert!(UserName::parse("").is_err());
        assert!(UserName::parse(&"x".repeat(101)).is_err());
        assert!(UserName::parse("a\u{7}b").is_err());
        assert_eq!(UserName::parse(" Bob ").unwrap().as_ref(), "Bob");
    }
}
