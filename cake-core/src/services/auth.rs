use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use time::Duration;
use uuid::Uuid;

use crate::cache::TtlCache;
use crate::error::Resource;
use crate::ports::{
    ApiToken, AuthRepository, AuthSession, Clock, ExternalIdentity, HeaderIdentity, HeaderRequest, NewUser,
    OidcProvider, PasswordHasher, PendingLogin, SecretCipher, TokenGenerator, UserRepository,
};
use crate::ratelimit::{Rate, RateLimiter};
use crate::user::{Actor, Email, Role, User, UserId, UserName};
use crate::{CoreError, Result, policy};

/// Prefix of every API token, so leaked tokens are recognisable by secret scanners.
pub const API_TOKEN_PREFIX: &str = "cake_";

/// Settings of the sign-in methods this service runs.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Emails that are admins whatever the order of sign-up, for every sign-in method
    /// (`CAKE_ADMIN_EMAILS`).
    pub admin_emails: HashSet<String>,
    /// Whether email + password sign-up and sign-in are on (`CAKE_EMAIL_AND_PASSWORD_ENABLED`).
    pub email_and_password: bool,
    /// How long a browser session lives without being used (Better Auth's default: 7 days).
    pub session_ttl: Duration,
    /// A session used more than this after its last refresh gets its expiry moved to
    /// `now + session_ttl` (Better Auth's `updateAge`, default 1 day).
    pub session_update_age: Duration,
    /// Email domains reserved for the platform's own service users; nobody signs in or signs
    /// up with them (`CAKE_INTERNAL_EMAIL_DOMAINS`).
    pub internal_email_domains: Vec<String>,
    /// Sign-in attempts per account (failed ones count).
    pub sign_in_per_account: Rate,
    /// Sign-in and sign-up attempts per client IP address.
    pub sign_in_per_ip: Rate,
    /// The public URL (`CAKE_PUBLIC_URL`): OIDC redirect URIs and allowed callback URLs.
    pub public_url: String,
    /// How long an OIDC sign-in may take between redirect and callback.
    pub login_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_emails: HashSet::new(),
            email_and_password: true,
            session_ttl: Duration::days(7),
            session_update_age: Duration::days(1),
            internal_email_domains: vec!["cake.internal".to_owned()],
            sign_in_per_account: Rate::new(10, Duration::minutes(15)),
            sign_in_per_ip: Rate::new(30, Duration::minutes(1)),
            public_url: "http://127.0.0.1:8080".to_owned(),
            login_ttl: Duration::minutes(10),
        }
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

/// The start of an OIDC sign-in: where to send the browser, and the `state` to bind to it.
#[derive(Debug)]
pub struct LoginStart {
    /// The provider's authorization URL.
    pub url: String,
    /// The `state` of this attempt (the caller binds it to the browser with a cookie).
    pub state: SecretString,
}

/// A session created by header auth, reused for the same asserted identity for a short while
/// so that clients which drop cookies do not create a session per request.
#[derive(Clone)]
struct HeaderSession {
    user: User,
    session: AuthSession,
    token: SecretString,
}

/// The OIDC provider and the cipher sealing PKCE verifiers at rest.
type Oidc = (Arc<dyn OidcProvider>, Arc<dyn SecretCipher>);

/// Who a token belongs to, cached.
#[derive(Clone)]
enum Cached {
    Browser(AuthSession, User),
    Api(User),
}

impl Cached {
    fn user_id(&self) -> UserId {
        match self {
            Cached::Browser(_, u) | Cached::Api(u) => u.id,
        }
    }
}

/// Users, browser sessions, API tokens, and the sign-in methods: email + password, trusted
/// proxy headers ([`HeaderIdentity`]) and OpenID Connect ([`OidcProvider`]).
///
/// Every request resolves its token, so the identity behind a token digest is cached for
/// [`AuthService::IDENTITY_CACHE_TTL`]. Sign-out, token revocation and user removal through
/// this process take effect at once; through another replica, within the TTL.
#[derive(Clone)]
pub struct AuthService {
    identities: Arc<TtlCache<Vec<u8>, Cached>>,
    users: Arc<dyn UserRepository>,
    auth: Arc<dyn AuthRepository>,
    hasher: Arc<dyn PasswordHasher>,
    tokens: Arc<dyn TokenGenerator>,
    clock: Arc<dyn Clock>,
    config: Arc<AuthConfig>,
    per_account: Arc<RateLimiter>,
    per_ip: Arc<RateLimiter>,
    header: Option<Arc<dyn HeaderIdentity>>,
    header_sessions: Arc<TtlCache<ExternalIdentity, HeaderSession>>,
    oidc: Option<Oidc>,
}

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 128;

impl AuthService {
    /// Wires the service (email + password and tokens; see [`Self::with_header_identity`] and
    /// [`Self::with_oidc`] for the other sign-in methods).
    pub fn new(
        users: Arc<dyn UserRepository>,
        auth: Arc<dyn AuthRepository>,
        hasher: Arc<dyn PasswordHasher>,
        tokens: Arc<dyn TokenGenerator>,
        clock: Arc<dyn Clock>,
        config: AuthConfig,
    ) -> Self {
        let identities = Arc::new(TtlCache::new(Self::IDENTITY_CACHE_TTL, 100_000));
        let per_account = Arc::new(RateLimiter::new(config.sign_in_per_account));
        let per_ip = Arc::new(RateLimiter::new(config.sign_in_per_ip));
        Self {
            identities,
            users,
            auth,
            hasher,
            tokens,
            clock,
            config: Arc::new(config),
            per_account,
            per_ip,
            header: None,
            header_sessions: Arc::new(TtlCache::new(Self::HEADER_SESSION_REUSE, 10_000)),
            oidc: None,
        }
    }

    /// Turns on header auth (seed 002) with this identity source.
    pub fn with_header_identity(mut self, header: Arc<dyn HeaderIdentity>) -> Self {
        self.header = Some(header);
        self
    }

    /// Turns on OIDC sign-in with this provider; `cipher` seals the PKCE verifier at rest.
    pub fn with_oidc(mut self, provider: Arc<dyn OidcProvider>, cipher: Arc<dyn SecretCipher>) -> Self {
        self.oidc = Some((provider, cipher));
        self
    }

    /// How long a header-auth session is handed out again to the same asserted identity.
    pub const HEADER_SESSION_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

    /// How long the identity behind a token is reused without asking the database.
    pub const IDENTITY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether header auth is on.
    pub fn header_auth_enabled(&self) -> bool {
        self.header.is_some()
    }

    /// The headers header auth reads (empty when it is off).
    pub fn header_names(&self) -> Vec<String> {
        self.header.as_ref().map(|h| h.header_names()).unwrap_or_default()
    }

    fn password_enabled(&self) -> Result<()> {
        if self.config.email_and_password { Ok(()) } else { Err(CoreError::Disabled("email and password sign-in")) }
    }

    fn is_internal(&self, email: &Email) -> bool {
        let domain = email.domain();
        self.config
            .internal_email_domains
            .iter()
            .any(|d| domain == d.as_str() || domain.strip_suffix(d.as_str()).is_some_and(|p| p.ends_with('.')))
    }

    fn check_not_internal(&self, email: &Email) -> Result<()> {
        let domain = email.domain();
        if self.is_internal(email) {
            return Err(CoreError::Refused {
                code: "internal_email",
                message: format!("emails of {domain} are reserved for the platform's service users"),
            });
        }
        Ok(())
    }

    fn role_for(&self, email: &Email) -> Role {
        if self.config.admin_emails.contains(email.as_ref()) { Role::Admin } else { Role::Member }
    }

    /// Consumes one attempt of the client's address.
    fn limit_ip(&self, client: Option<IpAddr>) -> Result<()> {
        if let Some(ip) = client {
            self.per_ip
                .hit(&ip_key(ip), self.clock.now())
                .map_err(|retry_after_secs| CoreError::RateLimited { retry_after_secs })?;
        }
        Ok(())
    }

    /// Refuses when the client's address has no attempt left, without consuming one.
    fn check_ip(&self, client: Option<IpAddr>) -> Result<()> {
        match client.and_then(|ip| self.per_ip.check(&ip_key(ip), self.clock.now())) {
            Some(retry_after_secs) => Err(CoreError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Creates an account with a password and signs it in. The first account of an empty
    /// installation, and any email in `admin_emails`, is an admin.
    pub async fn sign_up(
        &self,
        email: &str,
        password: SecretString,
        name: &str,
        client: Option<IpAddr>,
    ) -> Result<SignedIn> {
        self.password_enabled()?;
        self.limit_ip(client)?;
        let email = Email::parse(email)?;
        self.check_not_internal(&email)?;
        let name = UserName::parse(name)?;
        let len = password.expose_secret().chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
            return Err(CoreError::invalid("password", format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")));
        }
        let role = self.role_for(&email);
        let hash = self.hasher.hash(&password).await?;
        let user = self.users.create(NewUser { email, name, role, password_hash: Some(hash) }).await?;
        self.start_session(user).await
    }

    /// Signs in with email and password. Unknown emails and wrong passwords get the same
    /// answer, after the same work, so accounts cannot be enumerated. Failed attempts are
    /// limited per account and per client address ([`CoreError::RateLimited`]); an attempt is
    /// counted before the password is checked, so parallel guesses cannot slip through.
    pub async fn sign_in(&self, email: &str, password: SecretString, client: Option<IpAddr>) -> Result<SignedIn> {
        self.password_enabled()?;
        self.check_ip(client)?;
        let Ok(email) = Email::parse(email) else {
            return Err(CoreError::InvalidCredentials);
        };
        let account = email.as_ref().to_owned();
        self.per_account
            .hit(&account, self.clock.now())
            .map_err(|retry_after_secs| CoreError::RateLimited { retry_after_secs })?;
        let found = if self.is_internal(&email) { None } else { self.users.find_by_email(&email).await? };
        let (user, hash) = match found {
            Some((user, Some(hash))) => (Some(user), hash),
            _ => (None, DUMMY_HASH.to_owned()),
        };
        let ok = self.hasher.verify(&password, &hash).await;
        match user {
            Some(user) if ok => {
                self.per_account.reset(&account);
                let user = self.promote_if_listed(user).await?;
                self.start_session(user).await
            }
            _ => {
                // The answer stays "invalid credentials" until the account or the address
                // runs out of attempts.
                let _ = self.limit_ip(client);
                Err(CoreError::InvalidCredentials)
            }
        }
    }

    async fn promote_if_listed(&self, mut user: User) -> Result<User> {
        if user.role != Role::Admin && self.config.admin_emails.contains(&user.email) {
            self.users.set_role(user.id, Role::Admin).await?;
            user.role = Role::Admin;
        }
        Ok(user)
    }

    /// Signs in (creating the user on first sight, one user per email) someone a trusted
    /// source vouches for: header auth or OIDC. Internal emails are refused before any user
    /// is created.
    pub async fn sign_in_external(&self, identity: ExternalIdentity) -> Result<SignedIn> {
        let email = Email::parse(&identity.email)?;
        self.check_not_internal(&email)?;
        let name = match identity.name.as_deref().map(UserName::parse) {
            Some(Ok(name)) => name,
            // No usable name: the email's local part, as Better Auth does.
            _ => UserName::parse(email.as_ref().split('@').next().unwrap_or("user"))?,
        };
        // An account made by an unverified password sign-up does not survive its email being
        // proven: whoever signed up with someone else's address loses the password, and every
        // session and token made with it.
        if let Some((existing, Some(_))) = self.users.find_by_email(&email).await? {
            self.users.detach_password(existing.id).await?;
            self.forget_user(existing.id);
        }
        let role = self.role_for(&email);
        let user = self.users.upsert_by_email(NewUser { email, name, role, password_hash: None }).await?;
        self.start_session(user).await
    }

    /// Header auth for a request without a valid session cookie (seed 002): `None` when header
    /// auth is off or the request asserts no identity.
    pub async fn sign_in_with_headers(&self, request: &HeaderRequest) -> Result<Option<SignedIn>> {
        let Some(header) = &self.header else { return Ok(None) };
        let Some(identity) = header.identify(request).await? else { return Ok(None) };
        if let Some(h) = self.header_sessions.get(&identity)
            && h.session.expires_at > self.clock.now()
        {
            return Ok(Some(SignedIn { user: h.user, session: h.session, token: h.token }));
        }
        let signed_in = self.sign_in_external(identity.clone()).await?;
        self.header_sessions.insert(
            identity,
            HeaderSession {
                user: signed_in.user.clone(),
                session: signed_in.session.clone(),
                token: signed_in.token.clone(),
            },
        );
        Ok(Some(signed_in))
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
        self.header_sessions.remove_where(|h| h.token.expose_secret() == token);
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

    /// Sliding expiry: when the session behind `token` was last refreshed more than
    /// `session_update_age` ago, moves its expiry to `now + session_ttl` and returns the
    /// updated session (the caller re-sends the cookie); otherwise `None`.
    pub async fn refresh_if_due(&self, token: &str, session: &AuthSession) -> Result<Option<AuthSession>> {
        let now = self.clock.now();
        let refreshed_at = session.expires_at - self.config.session_ttl;
        if now - refreshed_at < self.config.session_update_age {
            return Ok(None);
        }
        let expires_at = now + self.config.session_ttl;
        self.auth.extend_browser_session(session.id, expires_at).await?;
        let updated = AuthSession { expires_at, ..session.clone() };
        let digest = self.tokens.digest(token);
        if let Some(Cached::Browser(_, user)) = self.identities.get(&digest) {
            self.identities.insert(digest, Cached::Browser(updated.clone(), user));
        }
        Ok(Some(updated))
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

    /// Every user (admins only), by email, at most 1,000.
    pub async fn list_users(&self, actor: Option<&Actor>) -> Result<Vec<User>> {
        policy::can_administer(actor)?;
        self.users.list(1000).await
    }

    /// Checks that `actor` may remove `user` (an admin, not themselves) and that the user
    /// exists. Call before removing the user's sessions.
    pub async fn check_removable(&self, actor: Option<&Actor>, user: UserId) -> Result<()> {
        policy::can_administer(actor)?;
        if actor.is_some_and(|a| a.id == user) {
            return Err(CoreError::Conflict {
                code: "cannot_remove_self",
                message: "admins cannot remove themselves".into(),
            });
        }
        self.users.get(user).await?.ok_or(CoreError::NotFound(Resource::User))?;
        Ok(())
    }

    /// Removes a user (admins only): their browser sessions and API tokens are revoked at
    /// once. Their Cake sessions must have been torn down first
    /// ([`crate::services::SessionService::remove_all_of`]).
    pub async fn remove_user(&self, actor: Option<&Actor>, user: UserId) -> Result<()> {
        self.check_removable(actor, user).await?;
        if !self.users.delete(user).await? {
            return Err(CoreError::NotFound(Resource::User));
        }
        self.forget_user(user);
        Ok(())
    }

    /// Drops every cached identity of a user (their tokens were revoked).
    fn forget_user(&self, user: UserId) {
        self.identities.remove_where(|c| c.user_id() == user);
        self.header_sessions.remove_where(|h| h.user.id == user);
    }

    fn oidc_provider(&self, provider_id: &str) -> Result<&Oidc> {
        match &self.oidc {
            Some(p) if p.0.provider_id() == provider_id => Ok(p),
            _ => Err(CoreError::Refused {
                code: "unknown_provider",
                message: format!("no OpenID provider {provider_id:?} is configured"),
            }),
        }
    }

    /// Whether OIDC sign-in is on, and its provider id.
    pub fn oidc_provider_id(&self) -> Option<&str> {
        self.oidc.as_ref().map(|p| p.0.provider_id())
    }

    /// The redirect URI registered with the provider.
    pub fn oidc_redirect_uri(&self, provider_id: &str) -> String {
        format!("{}/api/auth/oauth2/callback/{provider_id}", self.config.public_url)
    }

    /// Where a sign-in may send the browser afterwards: a path on this site, or a URL on the
    /// public origin (anything else would be an open redirect).
    fn check_callback_url(&self, url: &str) -> Result<String> {
        let bad = || CoreError::invalid("callbackURL", "must be a path on this site or a URL on its public origin");
        if url.is_empty() {
            return Ok("/".to_owned());
        }
        if url.len() > 2048 || url.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad());
        }
        if url.starts_with('/') && !url.starts_with("//") {
            return Ok(url.to_owned());
        }
        let origin = origin_of(&self.config.public_url);
        match url.strip_prefix(origin) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => Ok(url.to_owned()),
            _ => Err(bad()),
        }
    }

    /// Starts an OIDC sign-in: stores `state`, `nonce` and the PKCE verifier, and returns the
    /// provider's authorization URL.
    pub async fn start_oidc(
        &self,
        provider_id: &str,
        callback_url: &str,
        client: Option<IpAddr>,
    ) -> Result<LoginStart> {
        let (provider, cipher) = self.oidc_provider(provider_id)?;
        // Each start stores a row: limited per address like the other sign-in attempts.
        self.limit_ip(client)?;
        let callback_url = self.check_callback_url(callback_url)?;
        let state = self.tokens.generate();
        let nonce = self.tokens.generate();
        let verifier = self.tokens.generate();
        let url = provider
            .authorization_url(
                &self.oidc_redirect_uri(provider_id),
                state.expose_secret(),
                nonce.expose_secret(),
                &verifier,
            )
            .await?;
        let pending = PendingLogin {
            provider_id: provider_id.to_owned(),
            nonce: nonce.expose_secret().to_owned(),
            code_verifier_sealed: cipher.encrypt(verifier.expose_secret().as_bytes())?,
            callback_url,
            expires_at: self.clock.now() + self.config.login_ttl,
        };
        self.auth.create_pending_login(self.tokens.digest(state.expose_secret()), pending).await?;
        Ok(LoginStart { url, state })
    }

    /// Finishes an OIDC sign-in at the callback: the pending attempt is taken (once) by its
    /// `state`, the code exchanged and the ID token validated, and the user signed in. Returns
    /// the session and where to send the browser.
    pub async fn finish_oidc(&self, provider_id: &str, state: &str, code: &str) -> Result<(SignedIn, String)> {
        let (provider, cipher) = self.oidc_provider(provider_id)?;
        let invalid_state =
            || CoreError::Refused { code: "invalid_state", message: "unknown, used or expired sign-in state".into() };
        let pending = self
            .auth
            .take_pending_login(self.tokens.digest(state), self.clock.now())
            .await?
            .ok_or_else(invalid_state)?;
        if pending.provider_id != provider_id {
            return Err(invalid_state());
        }
        let verifier = cipher.decrypt(&pending.code_verifier_sealed)?;
        let verifier = SecretString::from(String::from_utf8(verifier).map_err(CoreError::internal)?);
        let identity = provider.exchange(&self.oidc_redirect_uri(provider_id), code, &verifier, &pending.nonce).await?;
        let signed_in = self.sign_in_external(identity).await?;
        Ok((signed_in, pending.callback_url))
    }
}

/// The rate-limit key of an address: IPv6 clients by their /64 (one site's allocation), so
/// rotating through it does not multiply attempts.
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// `scheme://host[:port]` of a URL (the origin browsers send in `Origin`).
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
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
        let err =
            block_on(svc.sign_up("a@example.com", SecretString::from("short".to_owned()), "A", None)).unwrap_err();
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
        let s =
            block_on(svc.sign_up("Boss@example.com", SecretString::from("long enough".to_owned()), "B", None)).unwrap();
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
        assert!(matches!(block_on(svc.sign_in("a@example.com", pw(), None)), Err(CoreError::InvalidCredentials)));
        assert!(matches!(block_on(svc.sign_in("b@example.com", pw(), None)), Err(CoreError::InvalidCredentials)));
    }

    #[test]
    fn api_tokens_need_the_prefix() {
        let mut auth = MockAuthRepository::new();
        auth.expect_find_api_token_user().times(0);
        let svc = service(MockUserRepository::new(), auth, MockPasswordHasher::new());
        assert!(block_on(svc.user_for_api_token("not-a-cake-token")).unwrap().is_none());
    }

    fn session_repo() -> MockAuthRepository {
        let mut auth = MockAuthRepository::new();
        auth.expect_create_browser_session()
            .returning(|u, _, e| Ok(AuthSession { id: Uuid::nil(), user_id: u, expires_at: e }));
        auth
    }

    #[test]
    fn internal_emails_are_refused_before_any_user_exists() {
        let mut users = MockUserRepository::new();
        users.expect_upsert_by_email().times(0);
        users.expect_create().times(0);
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_hash().times(0);
        let svc = service(users, MockAuthRepository::new(), hasher);
        for email in ["bot@cake.internal", "BOT@Cake.Internal", "x@eu.cake.internal"] {
            let ext = ExternalIdentity { email: email.into(), name: None };
            let err = block_on(svc.sign_in_external(ext)).unwrap_err();
            assert!(matches!(err, CoreError::Refused { code: "internal_email", .. }), "{email}: {err:?}");
            let err =
                block_on(svc.sign_up(email, SecretString::from("long enough".to_owned()), "B", None)).unwrap_err();
            assert!(matches!(err, CoreError::Refused { code: "internal_email", .. }));
        }
        // A lookalike domain is not internal.
        let mut users = MockUserRepository::new();
        users.expect_find_by_email().returning(|_| Ok(None));
        users.expect_upsert_by_email().times(1).returning(|_| Ok(user(Role::Member)));
        let svc = service(users, session_repo(), MockPasswordHasher::new());
        block_on(svc.sign_in_external(ExternalIdentity { email: "a@notcake.internal".into(), name: None })).unwrap();
    }

    #[test]
    fn external_sign_in_upserts_with_admin_role_and_a_fallback_name() {
        let mut users = MockUserRepository::new();
        users.expect_find_by_email().returning(|_| Ok(Some((user(Role::Member), None))));
        users.expect_detach_password().times(0);
        users
            .expect_upsert_by_email()
            .withf(|u| u.role == Role::Admin && u.name.as_ref() == "boss" && u.password_hash.is_none())
            .times(1)
            .returning(|_| Ok(user(Role::Admin)));
        let svc = service(users, session_repo(), MockPasswordHasher::new());
        let ext = ExternalIdentity { email: "Boss@Example.com".into(), name: Some("   ".into()) };
        let s = block_on(svc.sign_in_external(ext)).unwrap();
        assert_eq!(s.user.role, Role::Admin);
    }

    #[test]
    fn a_proven_email_detaches_an_earlier_password_sign_up() {
        let mut users = MockUserRepository::new();
        users.expect_find_by_email().returning(|_| Ok(Some((user(Role::Member), Some("hash".into())))));
        users.expect_detach_password().times(1).returning(|_| Ok(()));
        users.expect_upsert_by_email().times(1).returning(|_| Ok(user(Role::Member)));
        let svc = service(users, session_repo(), MockPasswordHasher::new());
        block_on(svc.sign_in_external(ExternalIdentity { email: "a@example.com".into(), name: None })).unwrap();
    }

    #[test]
    fn password_sign_in_promotes_listed_admins() {
        let mut users = MockUserRepository::new();
        users.expect_find_by_email().returning(|_| {
            let mut u = user(Role::Member);
            u.email = "boss@example.com".into();
            Ok(Some((u, Some("h".into()))))
        });
        users.expect_set_role().withf(|_, r| *r == Role::Admin).times(1).returning(|_, _| Ok(()));
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_verify().returning(|_, _| true);
        let svc = service(users, session_repo(), hasher);
        let s = block_on(svc.sign_in("boss@example.com", SecretString::from("long enough".to_owned()), None)).unwrap();
        assert_eq!(s.user.role, Role::Admin);
    }

    #[test]
    fn failed_sign_ins_lock_the_account_and_the_ip_is_limited() {
        let mut users = MockUserRepository::new();
        users.expect_find_by_email().returning(|_| Ok(Some((user(Role::Member), Some("h".into())))));
        let mut hasher = MockPasswordHasher::new();
        hasher.expect_verify().returning(|p, _| p.expose_secret() == "right one");
        let svc = service(users, session_repo(), hasher);
        let pw = |p: &str| SecretString::from(p.to_owned());
        for _ in 0..10 {
            let r = block_on(svc.sign_in("a@example.com", pw("wrong one"), None));
            assert!(matches!(r, Err(CoreError::InvalidCredentials)));
        }
        // Locked: even the right password waits (the clock of this test never moves).
        let r = block_on(svc.sign_in("a@example.com", pw("right one"), None));
        assert!(matches!(r, Err(CoreError::RateLimited { retry_after_secs: 90 })), "{r:?}");
        // Per IP: 30 attempts a minute, whatever the account.
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        for i in 0..30 {
            let _ = block_on(svc.sign_in(&format!("u{i}@example.com"), pw("x"), ip));
        }
        let r = block_on(svc.sign_in("other@example.com", pw("right one"), ip));
        assert!(matches!(r, Err(CoreError::RateLimited { .. })));
    }

    #[test]
    fn sessions_slide_once_per_update_age() {
        let mut auth = MockAuthRepository::new();
        auth.expect_extend_browser_session()
            .withf(|_, e| *e == OffsetDateTime::UNIX_EPOCH + Duration::days(7))
            .times(1)
            .returning(|_, _| Ok(()));
        let svc = service(MockUserRepository::new(), auth, MockPasswordHasher::new());
        let fresh = AuthSession {
            id: Uuid::nil(),
            user_id: UserId(Uuid::nil()),
            expires_at: OffsetDateTime::UNIX_EPOCH + Duration::days(7) - Duration::hours(23),
        };
        assert!(block_on(svc.refresh_if_due("tok", &fresh)).unwrap().is_none());
        let old = AuthSession { expires_at: OffsetDateTime::UNIX_EPOCH + Duration::days(5), ..fresh };
        let updated = block_on(svc.refresh_if_due("tok", &old)).unwrap().unwrap();
        assert_eq!(updated.expires_at, OffsetDateTime::UNIX_EPOCH + Duration::days(7));
    }

    #[test]
    fn oidc_callback_urls_stay_on_this_site() {
        let svc = service(MockUserRepository::new(), MockAuthRepository::new(), MockPasswordHasher::new());
        for ok in ["/", "/sessions/1?x=y", "http://127.0.0.1:8080/app", ""] {
            assert!(svc.check_callback_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "http://127.0.0.1:8080.evil.example/",
            "/\\evil",
            "javascript:alert(1)",
        ] {
            assert!(svc.check_callback_url(bad).is_err(), "{bad}");
        }
    }
}
