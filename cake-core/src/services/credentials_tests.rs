//! Unit tests of credential brokering with mocked ports: who may grant what, what the broker
//! answers, what it records, and what never reaches a port.

use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;
use crate::credential::{BrokerGrant, SealedCredential};
use crate::ports::TokenGenerator;
use crate::ports::{MockAuditLog, MockClock, MockCredentialStore, MockIdGenerator, MockSecretCipher, MockTokenDeriver};
use crate::user::{Role, UserId};

const OWNER: UserId = UserId(Uuid::from_u128(1));
const OTHER: UserId = UserId(Uuid::from_u128(2));
const SID: SessionId = SessionId(Uuid::from_u128(42));
const CID: CredentialId = CredentialId(Uuid::from_u128(7));

fn actor(id: UserId, role: Role) -> Actor {
    Actor { id, role }
}

fn linked(owner: UserId, hosts: &[&str]) -> LinkedCredential {
    LinkedCredential {
        id: CID,
        owner,
        kind: CredentialKind::GitHub,
        hosts: hosts.iter().map(|h| GitHost::parse(h).unwrap()).collect(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

struct Digests;

impl TokenGenerator for Digests {
    fn generate(&self) -> SecretString {
        SecretString::from("unused".to_owned())
    }
    fn digest(&self, token: &str) -> Vec<u8> {
        format!("digest:{token}").into_bytes()
    }
}

struct Mocks {
    store: MockCredentialStore,
    audit: MockAuditLog,
    recorded: Arc<Mutex<Vec<NewAuditEntry>>>,
}

impl Mocks {
    fn new() -> Self {
        Self { store: MockCredentialStore::new(), audit: MockAuditLog::new(), recorded: Arc::default() }
    }

    /// Audit records are collected for assertions.
    fn recording(mut self) -> Self {
        let recorded = self.recorded.clone();
        self.audit.expect_record().returning(move |e| {
            recorded.lock().unwrap().push(e);
            Ok(())
        });
        self
    }

    fn build(self) -> (CredentialService, Arc<Mutex<Vec<NewAuditEntry>>>) {
        let mut cipher = MockSecretCipher::new();
        cipher.expect_encrypt().returning(|p| Ok([b"sealed:".as_slice(), p].concat()));
        cipher.expect_decrypt().returning(|c| Ok(c.strip_prefix(b"sealed:".as_slice()).unwrap().to_vec()));
        let mut deriver = MockTokenDeriver::new();
        deriver.expect_derive().returning(|purpose, input| {
            SecretString::from(format!("{purpose}-{}", Uuid::from_slice(input).unwrap().as_u128()))
        });
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(|| CID.0);
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| OffsetDateTime::UNIX_EPOCH);
        let svc = CredentialService::new(CredentialDeps {
            store: Arc::new(self.store),
            audit: Arc::new(self.audit),
            cipher: Arc::new(cipher),
            tokens: Arc::new(Digests),
            deriver: Arc::new(deriver),
            ids: Arc::new(ids),
            clock: Arc::new(clock),
        });
        (svc, self.recorded)
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn https(host: &str) -> GitCredentialRequest {
    GitCredentialRequest { protocol: "https".into(), host: host.into(), path: None }
}

/// The token the service derives for [`SID`].
fn token() -> String {
    format!("{BROKER_TOKEN_PREFIX}session-broker-token-42")
}

fn grant(live: bool, owner_of_credential: UserId) -> BrokerGrant {
    BrokerGrant {
        session_id: SID,
        owner: OWNER,
        live,
        credentials: vec![SealedCredential {
            credential: linked(owner_of_credential, &["github.com", "ghe.example.com:8443"]),
            ciphertext: b"sealed:ghp_secret".to_vec(),
        }],
    }
}

#[test]
fn linking_seals_the_secret() {
    let mut m = Mocks::new();
    m.store
        .expect_upsert()
        .withf(|_, owner, kind, hosts, sealed| {
            *owner == OWNER
                && *kind == CredentialKind::GitHub
                && hosts.iter().map(GitHost::as_str).collect::<Vec<_>>() == ["github.com"]
                && sealed.as_slice() == b"sealed:ghp_secret"
        })
        .times(1)
        .returning(|_, owner, _, _, _| Ok(linked(owner, &["github.com"])));
    // The store records the link in its own transaction.
    m.audit.expect_record().times(0);
    let (svc, _) = m.build();
    let me = actor(OWNER, Role::Member);
    let got = run(svc.link(Some(&me), CredentialKind::GitHub, SecretString::from("ghp_secret"), None)).unwrap();
    assert_eq!(got.owner, OWNER);
}

#[test]
fn a_bad_secret_or_host_or_no_identity_never_reaches_the_store() {
    let mut m = Mocks::new();
    m.store.expect_upsert().times(0);
    m.audit.expect_record().times(0);
    let (svc, _) = m.build();
    let me = actor(OWNER, Role::Member);
    let kind = CredentialKind::GitHub;
    assert!(matches!(
        run(svc.link(Some(&me), kind, SecretString::from("two words"), None)),
        Err(CoreError::InvalidInput { field: "token", .. })
    ));
    let hosts = ["https://github.com".to_owned()];
    assert!(matches!(
        run(svc.link(Some(&me), kind, SecretString::from("ghp_x"), Some(&hosts))),
        Err(CoreError::InvalidInput { field: "hosts", .. })
    ));
    assert!(matches!(run(svc.link(None, kind, SecretString::from("ghp_x"), None)), Err(CoreError::Unauthenticated)));
}

#[test]
fn unlinking_someone_elses_credential_is_not_found() {
    let mut m = Mocks::new();
    m.store.expect_delete().withf(|owner, id| *owner == OTHER && *id == CID).returning(|_, _| Ok(false));
    m.audit.expect_record().times(0);
    let (svc, _) = m.build();
    let err = run(svc.unlink(Some(&actor(OTHER, Role::Admin)), CID)).unwrap_err();
    assert!(matches!(err, CoreError::NotFound(Resource::Credential)));
}

#[test]
fn grants_are_checked_against_the_broker_row_of_the_permission_table() {
    let mut m = Mocks::new();
    m.store.expect_get().returning(|id| Ok((id == CID).then(|| linked(OWNER, &["github.com"]))));
    let (svc, _) = m.build();
    let owner = actor(OWNER, Role::Member);
    // The credential's owner creating their own session: granted, with the token's digest.
    let ok = run(svc.prepare_grants(&owner, SID, Visibility::Public, &[CID.0.to_string()])).unwrap();
    assert_eq!(ok.credentials, vec![CID]);
    assert_eq!(ok.token_digest, Some(format!("digest:{}", token()).into_bytes()));
    // Anyone else, admins included: not found (it does not reveal the credential exists).
    for other in [actor(OTHER, Role::Member), actor(OTHER, Role::Admin)] {
        let err = run(svc.prepare_grants(&other, SID, Visibility::Private, &[CID.0.to_string()])).unwrap_err();
        assert!(matches!(err, CoreError::NotFound(Resource::Credential)), "{err:?}");
    }
    // Unknown ids and garbage.
    let unknown = Uuid::from_u128(9).to_string();
    assert!(matches!(
        run(svc.prepare_grants(&owner, SID, Visibility::Private, &[unknown])),
        Err(CoreError::NotFound(Resource::Credential))
    ));
    assert!(matches!(
        run(svc.prepare_grants(&owner, SID, Visibility::Private, &["nope".into()])),
        Err(CoreError::InvalidInput { field: "credentials", .. })
    ));
    // Nothing asked: nothing granted, no token.
    let none = run(svc.prepare_grants(&owner, SID, Visibility::Private, &[])).unwrap();
    assert!(none.credentials.is_empty() && none.token_digest.is_none());
}

#[test]
fn the_broker_answers_a_granted_host_over_https_and_records_it() {
    let mut m = Mocks::new().recording();
    m.store
        .expect_grant_for_token()
        .withf(|d| d == format!("digest:{}", token()).as_bytes())
        .returning(|_| Ok(Some(grant(true, OWNER))));
    let (svc, recorded) = m.build();
    let got = run(svc.fill(&token(), &https("GHE.example.com:8443"))).unwrap().expect("a credential");
    assert_eq!(got.username, "x-access-token");
    assert_eq!(got.password.expose_secret(), "ghp_secret");
    let recorded = recorded.lock().unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].action, AuditAction::BrokerIssued);
    assert_eq!(recorded[0].credential, Some(CID));
    assert_eq!(recorded[0].session, Some(SID));
    assert!(!recorded[0].detail.to_string().contains("ghp_secret"));
}

#[test]
fn the_broker_refuses_other_hosts_plain_http_ended_sessions_and_foreign_credentials() {
    let cases: [(bool, UserId, GitCredentialRequest, bool); 4] = [
        (true, OWNER, https("gitlab.com"), false),
        (true, OWNER, GitCredentialRequest { protocol: "http".into(), host: "github.com".into(), path: None }, false),
        (false, OWNER, https("github.com"), true),
        // A grant row naming someone else's credential (never written by this service) is
        // still refused at use.
        (true, OTHER, https("github.com"), false),
    ];
    for (live, credential_owner, request, unauthenticated) in cases {
        let mut m = Mocks::new().recording();
        m.store.expect_grant_for_token().returning(move |_| Ok(Some(grant(live, credential_owner))));
        let (svc, recorded) = m.build();
        let got = run(svc.fill(&token(), &request));
        if unauthenticated {
            assert!(matches!(got, Err(CoreError::Unauthenticated)), "{request:?}: {got:?}");
        } else {
            assert!(matches!(got, Ok(None)), "{request:?}: {got:?}");
        }
        let recorded = recorded.lock().unwrap();
        assert_eq!(recorded.len(), 1, "{request:?}");
        assert_eq!(recorded[0].action, AuditAction::BrokerDenied);
        assert!(recorded[0].detail["reason"].is_string());
    }
}

#[test]
fn unknown_or_malformed_tokens_are_unauthenticated() {
    let mut m = Mocks::new();
    m.store.expect_grant_for_token().times(1).returning(|_| Ok(None));
    m.audit.expect_record().times(0);
    let (svc, _) = m.build();
    assert!(matches!(run(svc.fill("cakeb_unknown", &https("github.com"))), Err(CoreError::Unauthenticated)));
    // Not a broker token at all (an API token, a password): refused before any lookup.
    assert!(matches!(run(svc.fill("cake_api_token", &https("github.com"))), Err(CoreError::Unauthenticated)));
}

#[test]
fn only_admins_read_the_audit_log() {
    let mut m = Mocks::new();
    m.audit.expect_list().times(1).returning(|_, _| Ok(vec![]));
    let (svc, _) = m.build();
    assert!(matches!(run(svc.audit(Some(&actor(OWNER, Role::Member)), 50, None)), Err(CoreError::Forbidden(_))));
    assert!(matches!(run(svc.audit(None, 50, None)), Err(CoreError::Unauthenticated)));
    assert!(matches!(
        run(svc.audit(Some(&actor(OWNER, Role::Admin)), 0, None)),
        Err(CoreError::InvalidInput { field: "limit", .. })
    ));
    assert!(run(svc.audit(Some(&actor(OWNER, Role::Admin)), 50, None)).unwrap().is_empty());
}

#[test]
fn the_broker_token_is_derived_and_only_for_sessions_with_grants() {
    let mut m = Mocks::new();
    m.store
        .expect_renew_broker_token()
        .returning(|s, digest| Ok(s == SID && digest == format!("digest:{}", token()).into_bytes()));
    let (svc, _) = m.build();
    assert_eq!(run(svc.token_for(SID)).unwrap().unwrap().expose_secret(), token());
    assert!(run(svc.token_for(SessionId(Uuid::from_u128(43)))).unwrap().is_none());
}

#[test]
fn a_runaway_session_is_rate_limited_before_it_floods_the_audit_log() {
    let mut m = Mocks::new();
    m.store.expect_grant_for_token().returning(|_| Ok(Some(grant(true, OWNER))));
    m.audit.expect_record().times(super::BROKER_RATE.attempts as usize).returning(|_| Ok(()));
    let (svc, _) = m.build();
    for _ in 0..super::BROKER_RATE.attempts {
        assert!(run(svc.fill(&token(), &https("github.com"))).unwrap().is_some());
    }
    // The clock stands still: the next call waits for the bucket to refill.
    assert!(matches!(run(svc.fill(&token(), &https("github.com"))), Err(CoreError::RateLimited { .. })));
}
