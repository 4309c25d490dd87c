//! Credential brokering (DESIGN.md, seed 000): users link credentials, grant them to their own
//! sessions, and a session's runtime asks for them host by host with its broker token.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::credential::{
    self, AuditAction, AuditEntry, CredentialId, CredentialKind, GitCredential, GitCredentialRequest, GitHost,
    LinkedCredential, MAX_GRANTS, NewAuditEntry,
};
use crate::error::Resource;
use crate::policy::{self, Action, Decision};
use crate::ports::{AuditLog, Clock, CredentialStore, IdGenerator, SecretCipher, TokenDeriver, TokenGenerator};
use crate::ratelimit::{Rate, RateLimiter};
use crate::session::{SessionId, Visibility};
use crate::user::Actor;
use crate::{CoreError, Result};

/// The purpose a broker token is derived under.
const BROKER_PURPOSE: &str = "session-broker-token";
/// Broker tokens start with this, so they are recognisable in a leak scan.
pub const BROKER_TOKEN_PREFIX: &str = "cakeb_";

/// Everything [`CredentialService`] talks to.
#[derive(Clone)]
pub struct CredentialDeps {
    /// Linked credentials and grants.
    pub store: Arc<dyn CredentialStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Seals secrets at rest.
    pub cipher: Arc<dyn SecretCipher>,
    /// Digests broker tokens.
    pub tokens: Arc<dyn TokenGenerator>,
    /// Derives broker tokens.
    pub deriver: Arc<dyn TokenDeriver>,
    /// Credential ids.
    pub ids: Arc<dyn IdGenerator>,
    /// Time, for the broker's rate limit.
    pub clock: Arc<dyn Clock>,
}

/// How often one session's runtime may ask the broker: a runaway loop in a session must not
/// flood the audit log (each call is a record).
pub const BROKER_RATE: Rate = Rate::new(60, time::Duration::MINUTE);

/// What a session is granted, prepared before the session is stored
/// ([`CredentialService::prepare_grants`]).
#[derive(Debug, Clone, Default)]
pub struct PreparedGrants {
    /// The credentials.
    pub credentials: Vec<CredentialId>,
    /// The digest of the session's broker token (`None` when nothing is granted).
    pub token_digest: Option<Vec<u8>>,
}

/// The credential use cases: link, list and unlink one's credentials, grant them to a new
/// session, answer a session runtime's `cake git-credential`, and read the audit log.
#[derive(Clone)]
pub struct CredentialService {
    deps: CredentialDeps,
    limiter: Arc<RateLimiter>,
}

impl CredentialService {
    /// Wires the service.
    pub fn new(deps: CredentialDeps) -> Self {
        Self { deps, limiter: Arc::new(RateLimiter::new(BROKER_RATE)) }
    }

    /// Links a credential of `kind` to the actor's account, or replaces the secret and hosts of
    /// the one they linked before. The secret is stored encrypted and never returned.
    pub async fn link(
        &self,
        actor: Option<&Actor>,
        kind: CredentialKind,
        secret: SecretString,
        hosts: Option<&[String]>,
    ) -> Result<LinkedCredential> {
        let actor = policy::signed_in(actor)?;
        let secret = credential::parse_secret(secret)?;
        let hosts = credential::parse_hosts(kind, hosts)?;
        let sealed = self.deps.cipher.encrypt(secret.expose_secret().as_bytes())?;
        let id = CredentialId(self.deps.ids.new_id());
        // The store records it in the audit log in the same transaction.
        self.deps.store.upsert(id, actor.id, kind, &hosts, sealed).await
    }

    /// The actor's credentials (never a secret).
    pub async fn list(&self, actor: Option<&Actor>) -> Result<Vec<LinkedCredential>> {
        let actor = policy::signed_in(actor)?;
        self.deps.store.list(actor.id).await
    }

    /// Unlinks one of the actor's credentials; sessions granted it lose it at once. Someone
    /// else's credential is "not found".
    pub async fn unlink(&self, actor: Option<&Actor>, id: CredentialId) -> Result<()> {
        let actor = policy::signed_in(actor)?;
        // The store records it in the audit log in the same transaction.
        if !self.deps.store.delete(actor.id, id).await? {
            return Err(CoreError::NotFound(Resource::Credential));
        }
        Ok(())
    }

    /// Checks that the actor may broker each credential into a session they are creating
    /// (the broker row of the permission table: only the credential's owner, who owns the
    /// session), and derives the session's broker token digest. Someone else's credential is
    /// "not found", so ids of others' credentials reveal nothing.
    pub async fn prepare_grants(
        &self,
        actor: &Actor,
        session: SessionId,
        visibility: Visibility,
        requested: &[String],
    ) -> Result<PreparedGrants> {
        if requested.is_empty() {
            return Ok(PreparedGrants::default());
        }
        if requested.len() > MAX_GRANTS {
            return Err(CoreError::invalid("credentials", format!("at most {MAX_GRANTS} credentials")));
        }
        let mut credentials = Vec::with_capacity(requested.len());
        for raw in requested {
            let id = uuid::Uuid::parse_str(raw)
                .map(CredentialId)
                .map_err(|_| CoreError::invalid("credentials", format!("{raw:?} is not a credential id")))?;
            if credentials.contains(&id) {
                continue;
            }
            let Some(found) = self.deps.store.get(id).await? else {
                return Err(CoreError::NotFound(Resource::Credential));
            };
            // The session is the actor's own: they are creating it.
            let action = Action::BrokerCredential { credential_owner: found.owner };
            if policy::decide(Some(actor), actor.id, visibility, action) != Decision::Allow {
                return Err(CoreError::NotFound(Resource::Credential));
            }
            credentials.push(id);
        }
        let token = self.broker_token(session);
        let token_digest = Some(self.deps.tokens.digest(token.expose_secret()));
        Ok(PreparedGrants { credentials, token_digest })
    }

    /// The credentials granted to a session and still linked (the caller checked access).
    pub async fn granted(&self, session: SessionId) -> Result<Vec<LinkedCredential>> {
        self.deps.store.granted(session).await
    }

    /// The broker token a session's runtime gets, if the session was granted credentials.
    /// Derived, not stored: every replica hands the same token to a restarted runtime; its
    /// digest is stored again at each start, so a rotated installation secret gives running
    /// sessions a working token when they next start.
    pub async fn token_for(&self, session: SessionId) -> Result<Option<SecretString>> {
        let token = self.broker_token(session);
        let digest = self.deps.tokens.digest(token.expose_secret());
        Ok(self.deps.store.renew_broker_token(session, digest).await?.then_some(token))
    }

    fn broker_token(&self, session: SessionId) -> SecretString {
        let derived = self.deps.deriver.derive(BROKER_PURPOSE, session.0.as_bytes());
        SecretString::from(format!("{BROKER_TOKEN_PREFIX}{}", derived.expose_secret()))
    }

    /// Answers `cake git-credential get` from a session's runtime: the granted credential
    /// whose hosts include the requested host, over https only, while the session lives.
    /// `Ok(None)`: no granted credential serves that host (git then tries its next helper).
    /// A token that is unknown, or whose session ended, is refused as unauthenticated; more
    /// than [`BROKER_RATE`] calls of one session are refused as rate-limited.
    /// Every answer is recorded in the audit log, never the secret.
    pub async fn fill(&self, token: &str, request: &GitCredentialRequest) -> Result<Option<GitCredential>> {
        if !token.starts_with(BROKER_TOKEN_PREFIX) || token.len() > 256 {
            return Err(CoreError::Unauthenticated);
        }
        let digest = self.deps.tokens.digest(token);
        let Some(grant) = self.deps.store.grant_for_token(&digest).await? else {
            return Err(CoreError::Unauthenticated);
        };
        if let Err(retry_after_secs) = self.limiter.hit(&grant.session_id.0.to_string(), self.deps.clock.now()) {
            return Err(CoreError::RateLimited { retry_after_secs });
        }
        let owner = Actor { id: grant.owner, role: crate::user::Role::Member };
        let host = GitHost::parse(&request.host);
        // Never the repository path: admins read the log, and paths of private sessions'
        // repositories are not theirs to see.
        let detail = json!({"protocol": request.protocol, "host": request.host});
        let deny = |reason: &str, mut detail: serde_json::Value| {
            detail["reason"] = json!(reason);
            detail
        };
        if !grant.live {
            let d = deny("the session has ended", detail);
            self.record(AuditAction::BrokerDenied, &owner, Some(grant.session_id), None, d).await?;
            return Err(CoreError::Unauthenticated);
        }
        if request.protocol != "https" {
            let d = deny("only https is brokered", detail);
            self.record(AuditAction::BrokerDenied, &owner, Some(grant.session_id), None, d).await?;
            return Ok(None);
        }
        let chosen = host.ok().and_then(|host| {
            grant.credentials.iter().find(|c| {
                c.credential.hosts.contains(&host)
                    // The broker row of the permission table, once more at use: the
                    // credential's owner owns the session.
                    && policy::decide(
                        Some(&owner),
                        grant.owner,
                        Visibility::Private,
                        Action::BrokerCredential { credential_owner: c.credential.owner },
                    ) == Decision::Allow
            })
        });
        let Some(chosen) = chosen else {
            let d = deny("no granted credential serves this host", detail);
            self.record(AuditAction::BrokerDenied, &owner, Some(grant.session_id), None, d).await?;
            return Ok(None);
        };
        let plain = self.deps.cipher.decrypt(&chosen.ciphertext)?;
        let password = String::from_utf8(plain).map_err(|_| CoreError::internal("a stored credential is not UTF-8"))?;
        let id = chosen.credential.id;
        self.record(AuditAction::BrokerIssued, &owner, Some(grant.session_id), Some(id), detail).await?;
        Ok(Some(GitCredential {
            username: chosen.credential.kind.git_username().to_owned(),
            password: SecretString::from(password),
        }))
    }

    /// The audit log, newest first (admins only).
    pub async fn audit(&self, actor: Option<&Actor>, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>> {
        policy::can_administer(actor)?;
        if !(1..=200).contains(&limit) {
            return Err(CoreError::invalid("limit", "must be 1 to 200"));
        }
        self.deps.audit.list(limit, before).await
    }

    async fn record(
        &self,
        action: AuditAction,
        actor: &Actor,
        session: Option<SessionId>,
        credential: Option<CredentialId>,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.deps.audit.record(NewAuditEntry { action, actor: Some(actor.id), session, credential, detail }).await
    }
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
