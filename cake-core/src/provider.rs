//! Model providers, managed by admins in OpenCode's own provider format (DESIGN.md,
//! "Credential brokering"): provider id → `{npm, name, options: {baseURL, apiKey, headers},
//! models}`, e.g. a LiteLLM proxy as an OpenAI-compatible provider.
//!
//! Secrets (`options.apiKey` and every `options.headers` value) are stored encrypted, shown back
//! as [`SECRET_MASK`], and a save that sends the mask keeps the stored value. Each session's
//! OpenCode config is built from these settings with every secret replaced by an `{env:…}`
//! reference, so keys travel only as environment variables of the session's runtime and are
//! never written to disk.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::CoreError;

/// What the API shows instead of a stored secret; sending it back keeps the stored value.
pub const SECRET_MASK: &str = "%%SECRET%%";

/// A `providerId/modelId` reference, both parts non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelRef {
    provider: String,
    model: String,
}

impl ModelRef {
    /// Parses `provider/model` (the model part may itself contain `/`).
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        match raw.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok(Self { provider: p.to_owned(), model: m.to_owned() }),
            _ => Err(CoreError::invalid("defaultModel", "must look like <providerId>/<modelId>")),
        }
    }

    /// The provider id.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The model id within the provider.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl TryFrom<String> for ModelRef {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ModelRef> for String {
    fn from(m: ModelRef) -> String {
        format!("{}/{}", m.provider, m.model)
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// The organisation's model providers. Holds secrets in clear: it lives only in memory, is
/// encrypted before it is stored, and is masked before it is shown.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSettings {
    /// Provider id → OpenCode provider object.
    pub providers: Map<String, Value>,
    /// The model sessions use.
    pub default_model: ModelRef,
    /// Optional OpenCode `permission` config applied to every session (e.g. `{"bash": "ask"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Value>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, even in debug output.
        f.debug_struct("ProviderSettings")
            .field("providers", &self.masked().providers)
            .field("default_model", &self.default_model)
            .finish()
    }
}

fn valid_provider_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Calls `f` on every secret string of one provider object: `options.apiKey` and every value of
/// `options.headers`. The path names it for error messages and env var naming.
fn for_each_secret(provider: &mut Value, mut f: impl FnMut(&str, &mut Value)) {
    let Some(options) = provider.get_mut("options").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(key) = options.get_mut("apiKey") {
        f("options.apiKey", key);
    }
    if let Some(headers) = options.get_mut("headers").and_then(Value::as_object_mut) {
        for (name, v) in headers.iter_mut() {
            f(&format!("options.headers.{name}"), v);
        }
    }
}

impl ProviderSettings {
    /// Checks the shape of an admin's input: ids, objects where OpenCode expects objects,
    /// strings for secrets, and a default model that exists.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.providers.is_empty() {
            return Err(CoreError::invalid("providers", "must name at least one provider"));
        }
        for (id, p) in &self.providers {
            if !valid_provider_id(id) {
                return Err(CoreError::invalid(
                    "providers",
                    format!("provider id {id:?} may only hold letters, digits, '-', '_' and '.'"),
                ));
            }
            let Some(obj) = p.as_object() else {
                return Err(CoreError::invalid("providers", format!("provider {id:?} must be an object")));
            };
            for key in ["options", "models"] {
                if obj.get(key).is_some_and(|v| !v.is_object()) {
                    return Err(CoreError::invalid("providers", format!("{id}.{key} must be an object")));
                }
            }
            if let Some(headers) = obj.get("options").and_then(|o| o.get("headers"))
                && !headers.is_object()
            {
                return Err(CoreError::invalid("providers", format!("{id}.options.headers must be an object")));
            }
            let mut problem = None;
            let mut copy = p.clone();
            for_each_secret(&mut copy, |path, v| {
                if !v.is_string() && problem.is_none() {
                    problem = Some(format!("{id}.{path} must be a string"));
                }
            });
            if let Some(problem) = problem {
                return Err(CoreError::invalid("providers", problem));
            }
        }
        let Some(provider) = self.providers.get(self.default_model.provider()) else {
            return Err(CoreError::invalid(
                "defaultModel",
                format!("provider {:?} is not configured", self.default_model.provider()),
            ));
        };
        if let Some(models) = provider.get("models").and_then(Value::as_object)
            && !models.contains_key(self.default_model.model())
        {
            return Err(CoreError::invalid(
                "defaultModel",
                format!(
                    "model {:?} is not among provider {:?}'s models",
                    self.default_model.model(),
                    self.default_model.provider()
                ),
            ));
        }
        if self.permission.as_ref().is_some_and(|p| !p.is_object() && !p.is_string()) {
            return Err(CoreError::invalid("permission", "must be an OpenCode permission object"));
        }
        Ok(())
    }

    /// The settings with every secret replaced by [`SECRET_MASK`].
    pub fn masked(&self) -> ProviderSettings {
        let mut out = self.clone();
        for p in out.providers.values_mut() {
            for_each_secret(p, |_, v| *v = Value::String(SECRET_MASK.to_owned()));
        }
        out
    }

    /// Replaces each [`SECRET_MASK`] in `self` by the value stored at the same place in
    /// `previous`. A mask with nothing stored behind it is an error, never a literal key.
    pub fn restore_secrets(&mut self, previous: Option<&ProviderSettings>) -> Result<(), CoreError> {
        let mut missing = None;
        for (id, p) in self.providers.iter_mut() {
            let old = previous.and_then(|prev| prev.providers.get(id)).cloned();
            for_each_secret(p, |path, v| {
                if v.as_str() != Some(SECRET_MASK) {
                    return;
                }
                let stored = old.as_ref().and_then(|o| lookup(o, path)).filter(|s| s.as_str() != Some(SECRET_MASK));
                match stored {
                    Some(s) => *v = s,
                    None => {
                        missing.get_or_insert_with(|| format!("{id}.{path} is {SECRET_MASK} but no value is stored"));
                    }
                }
            });
        }
        match missing {
            Some(m) => Err(CoreError::invalid("providers", m)),
            None => Ok(()),
        }
    }

    /// Builds the OpenCode config for one session: providers with secrets as `{env:…}`
    /// references, the default model, autoupdate and sharing off, only the configured
    /// providers enabled (so OpenCode's built-in free provider is never used), and the
    /// organisation's permission rules. Returns the JSON and the env vars it references.
    pub fn opencode_config(&self) -> (String, Vec<(String, SecretString)>) {
        let mut env = Vec::new();
        let mut providers = self.providers.clone();
        for (i, p) in providers.values_mut().enumerate() {
            let mut j = 0;
            for_each_secret(p, |path, v| {
                let name = if path == "options.apiKey" {
                    format!("CAKE_PROVIDER_{i}_API_KEY")
                } else {
                    j += 1;
                    format!("CAKE_PROVIDER_{i}_HEADER_{j}")
                };
                if let Some(secret) = v.as_str() {
                    env.push((name.clone(), SecretString::from(secret.to_owned())));
                }
                *v = Value::String(format!("{{env:{name}}}"));
            });
        }
        let enabled: Vec<&String> = self.providers.keys().collect();
        let mut config = json!({
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": false,
            "share": "disabled",
            "provider": providers,
            "enabled_providers": enabled,
            "model": self.default_model.to_string(),
            "small_model": self.default_model.to_string(),
        });
        if let (Some(perm), Some(obj)) = (&self.permission, config.as_object_mut()) {
            obj.insert("permission".to_owned(), perm.clone());
        }
        (config.to_string(), env)
    }

    /// Serialises for encryption at rest.
    pub fn to_plaintext(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Deserialises after decryption.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, CoreError> {
        serde_json::from_slice(bytes).map_err(CoreError::internal)
    }
}

fn lookup(provider: &Value, path: &str) -> Option<Value> {
    let rest = path.strip_prefix("options.")?;
    let options = provider.get("options")?;
    match rest.strip_prefix("headers.") {
        Some(h) => options.get("headers")?.get(h).cloned(),
        None => options.get(rest).cloned(),
    }
}

/// Exposes a secret's value for building a runtime environment; kept here so grep finds every
/// place that does it.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: &str) -> ProviderSettings {
        serde_json::from_value(json!({
            "providers": {"fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": "http://127.0.0.1:1/v1", "apiKey": key, "headers": {"X-Team": "t-secret"}},
                "models": {"m": {"name": "M"}}
            }},
            "defaultModel": "fake/m"
        }))
        .unwrap()
    }

    #[test]
    fn masking_hides_every_secret() {
        let m = settings("sk-1").masked();
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("sk-1") && !text.contains("t-secret"), "{text}");
        assert_eq!(text.matches(SECRET_MASK).count(), 2);
        assert!(!format!("{:?}", settings("sk-1")).contains("sk-1"));
    }

    #[test]
    fn mask_keeps_stored_value() {
        let old = settings("sk-1");
        let mut new = settings(SECRET_MASK);
        new.restore_secrets(Some(&old)).unwrap();
        assert_eq!(new.providers["fake"]["options"]["apiKey"], "sk-1");
    }

    #[test]
    fn mask_without_stored_value_is_refused() {
        let mut new = settings(SECRET_MASK);
        assert!(new.restore_secrets(None).is_err());
    }

    #[test]
    fn opencode_config_references_env_only() {
        let (cfg, env) = settings("sk-1").opencode_config();
        assert!(!cfg.contains("sk-1") && !cfg.contains("t-secret"), "{cfg}");
        let v: Value = serde_json::from_str(&cfg).unwrap();
        assert_eq!(v["provider"]["fake"]["options"]["apiKey"], "{env:CAKE_PROVIDER_0_API_KEY}");
        assert_eq!(v["model"], "fake/m");
        assert_eq!(v["enabled_providers"], json!(["fake"]));
        let names: Vec<_> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["CAKE_PROVIDER_0_API_KEY", "CAKE_PROVIDER_0_HEADER_1"]);
        assert_eq!(env[0].1.expose_secret(), "sk-1");
    }

    #[test]
    fn validation_rejects_bad_shapes() {
        let mut s = settings("k");
        s.default_model = ModelRef::parse("fake/other").unwrap();
        assert!(s.validate().is_err());
        let mut s = settings("k");
        s.default_model = ModelRef::parse("nope/m").unwrap();
        assert!(s.validate().is_err());
        let mut s = settings("k");
        s.providers.insert("bad id!".into(), json!({}));
        assert!(s.validate().is_err());
        let mut s = settings("k");
        s.providers["fake"]["options"]["apiKey"] = json!(42);
        assert!(s.validate().is_err());
        assert!(settings("k").validate().is_ok());
        assert!(ModelRef::parse("nomodel").is_err());
        assert!(ModelRef::parse("/m").is_err());
    }
}
