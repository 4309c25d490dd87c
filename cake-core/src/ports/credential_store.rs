use async_trait::async_trait;

use crate::Result;
use crate::credential::{
    AuditEntry, BrokerGrant, CredentialId, CredentialKind, GitHost, LinkedCredential, NewAuditEntry,
};
use crate::user::UserId;

/// Linked credentials, ciphertext only, and the grants the broker reads (DESIGN.md
/// `CredentialStore`).
///
/// A session's grants and its broker-token digest are written with the session itself
/// ([`crate::ports::NewSession`]), in one transaction; they go with it when it is deleted, and
/// a grant goes with its credential when that is unlinked.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Links a credential, or replaces the secret and hosts of the owner's credential of that
    /// kind (one per kind and user; its id stays, so sessions granted it keep it), and records
    /// `credential.linked` (with the hosts) in the audit log, in the same transaction.
    async fn upsert(
        &self,
        id: CredentialId,
        owner: UserId,
        kind: CredentialKind,
        hosts: &[GitHost],
        ciphertext: Vec<u8>,
    ) -> Result<LinkedCredential>;
    /// The owner's credentials, oldest first.
    async fn list(&self, owner: UserId) -> Result<Vec<LinkedCredential>>;
    /// One credential, whoever owns it.
    async fn get(&self, id: CredentialId) -> Result<Option<LinkedCredential>>;
    /// Unlinks the owner's credential and records `credential.unlinked`, in one transaction;
    /// `false` (and no record) if the owner has no such credential.
    async fn delete(&self, owner: UserId, id: CredentialId) -> Result<bool>;
    /// The credentials granted to a session and still linked, oldest first.
    async fn granted(&self, session: crate::session::SessionId) -> Result<Vec<LinkedCredential>>;
    /// The session behind a broker-token digest and what it was granted, or `None` for a
    /// token that is unknown or was revoked (the session is gone).
    async fn grant_for_token(&self, digest: &[u8]) -> Result<Option<BrokerGrant>>;
    /// If the session was given a broker token (it was granted credentials), stores `digest`
    /// as its token's digest (the token is derived anew at each start, so a changed
    /// installation secret takes effect) and answers `true`; else `false`.
    async fn renew_broker_token(&self, session: crate::session::SessionId, digest: Vec<u8>) -> Result<bool>;
}

/// The audit log: every grant and every broker call (DESIGN.md), readable by admins.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends one record.
    async fn record(&self, entry: NewAuditEntry) -> Result<()>;
    /// Records newest first, before the id `before` when given.
    async fn list(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>>;
}
