//! Application services: the use cases. Each asks the policy first and only then calls a
//! port, so a denied request never reaches the runtime or the data plane.

mod auth;
mod credentials;
mod providers;
mod sessions;
mod settings;

pub use auth::{AuthConfig, AuthService, LoginStart, SignedIn, origin_of};
pub use credentials::{BROKER_TOKEN_PREFIX, CredentialDeps, CredentialService, PreparedGrants};
pub use providers::ProviderService;
pub use sessions::{CreateSession, SessionDeps, SessionService};
pub use settings::{SettingsService, UserSettings};
