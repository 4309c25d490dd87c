use std::collections::HashSet;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use time::Duration;
use uuid::Uuid;

use crate::cache::TtlCache;
use crate::error::Resource;
use crate::ports::{
    ApiToken, AuthRepository, AuthSession, Clock, NewUser, PasswordHasher, TokenGenerator, UserRepository,
};
use crate::user::{Actor, Email, Role, User, UserName};
use crate::{CoreError, Result, policy};

/// Prefix of every API token, so leaked tokens are recognisable by secret scanners.
pub const API_TOKEN_PREFIX: &str = "cake_";

/// Settings of the sign-in methods this service runs.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Emails that are admins whatever the order of sign-up (`CAKE_ADMIN_EMAILS`).
    pub admin_emails: HashSet<String>,
    /// Whether email + password sign-up and sign-in are on (`CAKE_EMAIL_AND_PASSWORD_ENABLED`).
    pub email_and_password: bool,
    /// How long a browser session lives (Better Auth's default is 7 days).
    pub session_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { admin_emails: HashSet::new(), email_and_password: true, session_ttl: Duration::days(7) }
    }
}

/// A successful sign-up or sign-in: the user and a new browser session.
#[derive(Debug)]
pub struct SignedIn {
    /// Who signed in.
    pub user: User,
    /// The server-side session row.
    pub session: AuthSession,
    /// The bearer token for the cookie; shown once, stored only as a digest.
    pub token: SecretString,
}

/// Who a token belongs to, cached.
#[derive(Clone)]
enum Cached {
    Browser(AuthSession, User),
    Api(User),
}

impl Cached {
    fn user_id(&self) -> crate::user::UserId {
        match self {
            Cached::Browser(_, u) | Cached::Api(u) => u.id,
        }
    }
}

/// Users, browser sessions and API tokens.
///
/// Every request resolves its token, so the identity behind a token digest is cached for
/// [`AuthService::IDENTITY_CACHE_TTL`]. Sign-out and token revocation through this process
/// take effect at once; through another replica, within the TTL.
#[derive(Clone)]
pub struct AuthService {
    identities: Arc<TtlCache<Vec<u8>, Cached>>,
    users: Arc<dyn UserRepository>,
    auth: Arc<dyn AuthRepository>,
    hasher: Arc<dyn PasswordHasher>,
    tokens: Arc<dyn TokenGenerator>,
    clock: Arc<dyn Clock>,
    config: AuthConfig,
}

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 128;

impl AuthService {
    /// Wires the service.
    pub fn new(
        users: Arc<dyn UserRepository>,
        auth: Arc<dyn AuthRepository>,
        hasher: Arc<dyn PasswordHasher>,
        tokens: Arc<dyn TokenGenerator>,
        clock: Arc<dyn Clock>,
        config: AuthConfig,
    ) -> Self {
        let identities = Arc::new(TtlCache::new(Self::IDENTITY_CACHE_TTL, 100_000));
        Self { identities, users, auth, hasher, tokens, clock, config }
    }

    /// How long the identity behind a token is reused without asking the database.
    pub const IDENTITY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

    fn password_enabled(&self) -> Result<()> {
        if self.config.email_and_password { Ok(()) } else { Err(CoreError::Disabled("email and password sign-in")) }
    }

    /// Creates an account with a password and signs it in. The first account of an empty
    /// installation, and any email in `admin_emails`, is an admin.
    pub async fn sign_up(&self, email: &str, password: SecretString, name: &str) -> Result<SignedIn> {
        self.password_enabled()?;
        let email = Email::parse(email)?;
        let name = UserName::parse(name)?;
        let len = password.expose_secret().chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
            return Err(CoreError::invalid("password", format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")));
        }
        let role = if self.config.admin_emails.contains(email.as_ref()) { Role::Admin } else { Role::Member };
        let hash = self.hasher.hash(&password)?;
        let user = self.users.create(NewUser { email, name, role, password_hash: Some(hash) }).await?;
        self.start_session(user).await
    }

    /// Signs in with email and password. Unknown emails and wrong passwords get the same
    /// answer, after the same work, so accounts cannot be enumerated.
    pub async fn sign_in(&self, email: &str, password: SecretString) -> Result<SignedIn> {
        self.password_enabled()?;
        let Ok(email) = Email::parse(email) else {
            return Err(CoreError::InvalidCredentials);
        };
        let found = self.users.find_by_email(&email).await?;
        let (user, hash) = match found {
            Some((user, Some(hash))) => (Some(user), hash),
            _ => (None, DUMMY_HASH.to_owned()),
        };
        let ok = self.hasher.verify(&password, &hash);
        match user {
            Some(user) if ok => self.start_session(user).await,
            _ => Err(CoreError::InvalidCredentials),
        }
    }

    async fn start_session(&self, user: User) -> Result<SignedIn> {
        let token = self.tokens.generate();
        let digest = self.tokens.digest(token.expose_secret());
        let expires = self.clock.now() + self.config.session_ttl;
        let session = self.auth.create_browser_session(user.id, digest, expires).await?;
        Ok(SignedIn { user, session, token })
    }

    /// Revokes the browser session behind `token`.
    pub async fn sign_out(&self, token: &str) -> Result<()> {
        let digest = self.tokens.digest(token);
        self.identities.remove(&digest);
        self.auth.delete_browser_session(digest).await
    }

    /// The live browser session behind a cookie token, with its user.
    pub async fn session_for_token(&self, token: &str) -> Result<Option<(AuthSession, User)>> {
        let digest = self.tokens.digest(token);
        let now = self.clock.now();
        if let Some(Cached::Browser(session, user)) = self.identities.get(&digest)
            && session.expires_at > now
        {
            return Ok(Some((session, user)));
        }
        let found = self.auth.find_browser_session(digest.clone(), now).await?;
        if let Some((session, user)) = &found {
            self.identities.insert(digest, Cached::Browser(session.clone(), user.clone()));
        }
        Ok(found)
    }

    /// The user behind an API token (`cake_…`).
    pub async fn user_for_api_token(&self, token: &str) -> Result<Option<User>> {
        if !token.starts_with(API_TOKEN_PREFIX) {
            return Ok(None);
        }
        let digest = self.tokens.digest(token);
        if let Some(Cached::Api(user)) = self.identities.get(&digest) {
            return Ok(Some(user));
        }
        let found = self.auth.find_api_token_user(digest.clone(), self.clock.now()).await?;
        if let Some(user) = &found {
            self.identities.insert(digest, Cached::Api(user.clone()));
        }
        Ok(found)
    }

    /// The signed-in user.
    pub async fn me(&self, actor: Option<&Actor>) -> Result<User> {
        let actor = policy::signed_in(actor)?;
        self.users.get(actor.id).await?.ok_or(CoreError::Unauthenticated)
    }

    /// Creates an API token; the returned secret is shown once.
    pub async fn create_api_token(&self, actor: Option<&Actor>, name: &str) -> Result<(ApiToken, SecretString)> {
        let actor = policy::signed_in(actor)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(CoreError::invalid("name", "must be 1 to 100 characters, none of them control characters"));
        }
        let secret = format!("{API_TOKEN_PREFIX}{}", self.tokens.generate().expose_secret());
        let token = self.auth.create_api_token(actor.id, name.to_owned(), self.tokens.digest(&secret)).await?;
        Ok((token, SecretString::from(secret)))
    }

    /// The signed-in user's API tokens (never their values).
    pub async fn list_api_tokens(&self, actor: Option<&Actor>) -> Result<Vec<ApiToken>> {
        let actor = policy::signed_in(actor)?;
        self.auth.list_api_tokens(actor.id).await
    }

    /// Revokes one of the signed-in user's API tokens.
    pub async fn delete_api_token(&self, actor: Option<&Actor>, id: Uuid) -> Result<()> {
        let actor = policy::signed_in(actor)?;
        if self.auth.delete_api_token(actor.id, id).await? {
            // The cache is keyed by digest, which is not stored with the id: drop the user's
            // cached API identities (they are re-read on their next use).
            self.identities.remove_where(|c| matches!(c, Cached::Api(_)) && c.user_id() == actor.id);
            Ok(())
        } else {
            Err(CoreError::NotFound(Resource::ApiToken))
        }
    }
}

/// A valid argon2id hash of a random password, verified against when an email is unknown so
/// both answers take the same time.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0CkR9mdJzlxR2Gdb3xZ9zOJcVQ4tk5TPlVS6wO2UgyE";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockAuthRepository, MockClock, MockPasswordHasher, MockTokenGenerator, MockUserRepository};
    use crate::user::UserId;
    use futures::executor::block_on;
    use time::OffsetDateTime;

    fn service(users: MockUserRepository, auth: MockAuthRepository, hasher: MockPasswordHasher) -> AuthService {
        let mut tokens = MockTokenGenerator::new();
        tokens.expect_generate().returning(|| SecretString::from("tok".to_owned()));
        tokens.expect_digest().returning(|t| t.as_bytes().to_vec());
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| OffsetDateTime::UNIX_EPOCH);
        let mut cfg = AuthConfig::default();
        cfg.admin_emails.insert("boss@example.com".into());
        AuthService::new(Arc::new(users), Arc::new(auth), Arc::new(hasher), Arc::new(tokens), Arc::new(clock), cfg)
    }

    fn user(role: Role) -> User {
        User {
            id: UserId(Uuid::nil()),
            email: "a@example.com".into(),
            name: "A".into(),
            role,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn short_password_creates_no_user() {
        let mut users = MockUserRepository::new();
        users.expect_create().times(0);
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_hash().times(0);
        let svc = service(users, MockAuthRepository::new(), hasher);
        let err = block_on(svc.sign_up("a@example.com", SecretString::from("short".to_owned()), "A")).unwrap_err();
        assert!(matches!(err, CoreError::InvalidInput { field: "password", .. }));
    }

    #[test]
    fn admin_emails_sign_up_as_admin() {
        let mut users = MockUserRepository::new();
        users.expect_create().withf(|u| u.role == Role::Admin).returning(|_| Ok(user(Role::Admin)));
        let mut auth = MockAuthRepository::new();
        auth.expect_create_browser_session()
            .returning(|u, _, e| Ok(AuthSession { id: Uuid::nil(), user_id: u, expires_at: e }));
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_hash().returning(|_| Ok("h".into()));
        let svc = service(users, auth, hasher);
        let s = block_on(svc.sign_up("Boss@example.com", SecretString::from("long enough".to_owned()), "B")).unwrap();
        assert_eq!(s.session.expires_at, OffsetDateTime::UNIX_EPOCH + Duration::days(7));
    }

    #[test]
    fn unknown_email_and_wrong_password_look_the_same() {
        let mut users = MockUserRepository::new();
        users
            .expect_find_by_email()
            .returning(|e| Ok((e.as_ref() == "a@example.com").then(|| (user(Role::Member), Some("real".into())))));
        let mut hasher = MockPasswordHasher::new();
        // The hash is verified in both cases, so both take the same time.
        hasher.expect_verify().times(2).returning(|_, _| false);
        let mut auth = MockAuthRepository::new();
        auth.expect_create_browser_session().times(0);
        let svc = service(users, auth, hasher);
        let pw = || SecretString::from("whatever1".to_owned());
        assert!(matches!(block_on(svc.sign_in("a@example.com", pw())), Err(CoreError::InvalidCredentials)));
        assert!(matches!(block_on(svc.sign_in("b@example.com", pw())), Err(CoreError::InvalidCredentials)));
    }

    #[test]
    fn api_tokens_need_the_prefix() {
        let mut auth = MockAuthRepository::new();
        auth.expect_find_api_token_user().times(0);
        let svc = service(MockUserRepository::new(), auth, MockPasswordHasher::new());
        assert!(block_on(svc.user_for_api_token("not-a-cake-token")).unwrap().is_none());
    }
}
