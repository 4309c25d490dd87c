use async_trait::async_trait;

use crate::Result;
use crate::user::{Email, Role, User, UserId, UserName};

/// A user about to be created.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Unique email.
    pub email: Email,
    /// Display name.
    pub name: UserName,
    /// Role unless this is the installation's first user, who is always an admin.
    pub role: Role,
    /// argon2id hash (PHC string), if the user signs in with a password.
    pub password_hash: Option<String>,
}

/// Stores users.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates a user. The first user of an empty installation becomes an admin, atomically.
    /// Fails with `Conflict { code: "email_taken" }` when the email exists.
    async fn create(&self, user: NewUser) -> Result<User>;
    /// Finds a user and their password hash by email.
    async fn find_by_email(&self, email: &Email) -> Result<Option<(User, Option<String>)>>;
    /// Gets a user by id.
    async fn get(&self, id: UserId) -> Result<Option<User>>;
    /// The user with this email, created if absent (one user per email however many requests
    /// race). An existing user keeps their name; `Role::Admin` promotes an existing member,
    /// `Role::Member` never demotes. The first user of an empty installation is an admin.
    async fn upsert_by_email(&self, user: NewUser) -> Result<User>;
    /// Removes a user's password and revokes every browser session and API token they have:
    /// an email proven by a trusted sign-in method (OIDC, the proxy) takes the account over
    /// from an unverified password sign-up.
    async fn detach_password(&self, id: UserId) -> Result<()>;
    /// Sets a user's role.
    async fn set_role(&self, id: UserId, role: Role) -> Result<()>;
    /// Deletes a user and, with them, their browser sessions and API tokens; `false` when there
    /// is no such user.
    async fn delete(&self, id: UserId) -> Result<bool>;
    /// All users, by email (at most `limit`).
    async fn list(&self, limit: i64) -> Result<Vec<User>>;
}
