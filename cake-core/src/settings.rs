//! Settings: which visibility new sessions start with, per surface (the web UI, Slack threads,
//! Slack DMs), as the organisation sets it and as each user overrides it (DESIGN.md,
//! "Settings"). Clients preselect it; `POST /api/sessions` still names `private` explicitly.

use serde::{Deserialize, Serialize};

use crate::session::Visibility;

/// A user's preferences: per surface a visibility, or `None` to inherit the organisation's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VisibilityPreferences {
    /// Sessions started in the web UI.
    pub web: Option<Visibility>,
    /// Sessions started from a Slack thread.
    pub slack_thread: Option<Visibility>,
    /// Sessions started from a Slack direct message.
    pub slack_dm: Option<Visibility>,
}

/// The organisation's defaults: a visibility for every surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VisibilityDefaults {
    /// Sessions started in the web UI.
    pub web: Visibility,
    /// Sessions started from a Slack thread.
    pub slack_thread: Visibility,
    /// Sessions started from a Slack direct message.
    pub slack_dm: Visibility,
}

impl Default for VisibilityDefaults {
    /// As Cake ships: web sessions and Slack threads public, Slack DMs private.
    fn default() -> Self {
        Self { web: Visibility::Public, slack_thread: Visibility::Public, slack_dm: Visibility::Private }
    }
}

impl VisibilityDefaults {
    /// What applies to a user: their preference where they set one, else the organisation's.
    pub fn resolve(self, prefs: VisibilityPreferences) -> VisibilityDefaults {
        VisibilityDefaults {
            web: prefs.web.unwrap_or(self.web),
            slack_thread: prefs.slack_thread.unwrap_or(self.slack_thread),
            slack_dm: prefs.slack_dm.unwrap_or(self.slack_dm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_override_the_organisation_per_surface() {
        let org = VisibilityDefaults::default();
        assert_eq!(org.resolve(VisibilityPreferences::default()), org);
        let prefs = VisibilityPreferences { web: Some(Visibility::Private), ..Default::default() };
        let got = org.resolve(prefs);
        assert_eq!(
            (got.web, got.slack_thread, got.slack_dm),
            (Visibility::Private, Visibility::Public, Visibility::Private)
        );
    }

    #[test]
    fn stored_json_round_trips() {
        let prefs = VisibilityPreferences { slack_dm: Some(Visibility::Public), ..Default::default() };
        let json = serde_json::to_value(prefs).unwrap();
        assert_eq!(json, serde_json::json!({"web": null, "slackThread": null, "slackDm": "public"}));
        assert_eq!(serde_json::from_value::<VisibilityPreferences>(serde_json::json!({})).unwrap(), Default::default());
    }
}
