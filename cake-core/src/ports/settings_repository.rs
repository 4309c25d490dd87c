use async_trait::async_trait;

use crate::Result;
use crate::settings::{VisibilityDefaults, VisibilityPreferences};
use crate::user::UserId;

/// Organisation and per-user settings.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait SettingsRepository: Send + Sync {
    /// The organisation's defaults, if an admin ever set them.
    async fn org_defaults(&self) -> Result<Option<VisibilityDefaults>>;
    /// Replaces the organisation's defaults.
    async fn set_org_defaults(&self, defaults: VisibilityDefaults) -> Result<()>;
    /// A user's preferences (all `None` if never set).
    async fn preferences(&self, user: UserId) -> Result<VisibilityPreferences>;
    /// Replaces a user's preferences.
    async fn set_preferences(&self, user: UserId, prefs: VisibilityPreferences) -> Result<()>;
}
