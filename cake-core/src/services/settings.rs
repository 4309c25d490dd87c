use std::sync::Arc;

use crate::ports::SettingsRepository;
use crate::settings::{VisibilityDefaults, VisibilityPreferences};
use crate::user::Actor;
use crate::{Result, policy};

/// Settings use cases: every signed-in user reads and sets their own preferences; admins set
/// the organisation's defaults (DESIGN.md, "Settings").
#[derive(Clone)]
pub struct SettingsService {
    repo: Arc<dyn SettingsRepository>,
}

/// A user's preferences and what applies to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSettings {
    /// Their own choices (`None`: inherit).
    pub preferences: VisibilityPreferences,
    /// Their choices over the organisation's defaults.
    pub effective: VisibilityDefaults,
}

impl SettingsService {
    /// Wires the service.
    pub fn new(repo: Arc<dyn SettingsRepository>) -> Self {
        Self { repo }
    }

    /// The actor's preferences and their effect.
    pub async fn mine(&self, actor: Option<&Actor>) -> Result<UserSettings> {
        let actor = policy::signed_in(actor)?;
        let preferences = self.repo.preferences(actor.id).await?;
        let org = self.org().await?;
        Ok(UserSettings { preferences, effective: org.resolve(preferences) })
    }

    /// Replaces the actor's preferences.
    pub async fn set_mine(&self, actor: Option<&Actor>, preferences: VisibilityPreferences) -> Result<UserSettings> {
        let actor = policy::signed_in(actor)?;
        self.repo.set_preferences(actor.id, preferences).await?;
        let org = self.org().await?;
        Ok(UserSettings { preferences, effective: org.resolve(preferences) })
    }

    /// The organisation's defaults (admins only).
    pub async fn organisation(&self, actor: Option<&Actor>) -> Result<VisibilityDefaults> {
        policy::can_administer(actor)?;
        self.org().await
    }

    /// Replaces the organisation's defaults (admins only).
    pub async fn set_organisation(
        &self,
        actor: Option<&Actor>,
        defaults: VisibilityDefaults,
    ) -> Result<VisibilityDefaults> {
        policy::can_administer(actor)?;
        self.repo.set_org_defaults(defaults).await?;
        Ok(defaults)
    }

    async fn org(&self) -> Result<VisibilityDefaults> {
        Ok(self.repo.org_defaults().await?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoreError;
    use crate::ports::MockSettingsRepository;
    use crate::session::Visibility;
    use crate::user::{Role, UserId};
    use uuid::Uuid;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    #[test]
    fn members_set_their_own_preferences_but_not_the_organisations() {
        let member = Actor { id: UserId(Uuid::from_u128(1)), role: Role::Member };
        let mut repo = MockSettingsRepository::new();
        repo.expect_set_org_defaults().times(0);
        repo.expect_org_defaults().returning(|| Ok(None));
        repo.expect_set_preferences()
            .withf(move |u, p| *u == member.id && p.web == Some(Visibility::Private))
            .times(1)
            .returning(|_, _| Ok(()));
        let svc = SettingsService::new(Arc::new(repo));
        let prefs = VisibilityPreferences { web: Some(Visibility::Private), ..Default::default() };
        let got = run(svc.set_mine(Some(&member), prefs)).unwrap();
        assert_eq!(got.effective.web, Visibility::Private);
        assert_eq!(got.effective.slack_dm, Visibility::Private, "inherited from Cake's defaults");
        assert!(matches!(
            run(svc.set_organisation(Some(&member), VisibilityDefaults::default())),
            Err(CoreError::Forbidden(_))
        ));
        assert!(matches!(run(svc.organisation(Some(&member))), Err(CoreError::Forbidden(_))));
        assert!(matches!(run(svc.mine(None)), Err(CoreError::Unauthenticated)));
    }
}
