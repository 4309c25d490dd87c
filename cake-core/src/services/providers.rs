use std::sync::Arc;

use crate::cache::TtlCache;
use crate::ports::{ProviderRepository, SecretCipher};
use crate::provider::{ModelRef, ProviderSettings};
use crate::user::Actor;
use crate::{Result, policy};

/// Admin-managed model providers (DESIGN.md, "Model providers"): stored encrypted, shown masked.
///
/// Reads are cached for [`ProviderService::CACHE_TTL`] (every session start reads them); a
/// save through this process updates the cache at once, other replicas see it within the TTL.
#[derive(Clone)]
pub struct ProviderService {
    repo: Arc<dyn ProviderRepository>,
    cipher: Arc<dyn SecretCipher>,
    cache: Arc<TtlCache<(), Option<ProviderSettings>>>,
}

impl ProviderService {
    /// Wires the service.
    pub fn new(repo: Arc<dyn ProviderRepository>, cipher: Arc<dyn SecretCipher>) -> Self {
        Self { repo, cipher, cache: Arc::new(TtlCache::new(Self::CACHE_TTL, 1)) }
    }

    /// How long settings read from the database are reused.
    pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

    /// The settings as an admin sees them: every secret masked. `None` if never configured.
    pub async fn get(&self, actor: Option<&Actor>) -> Result<Option<ProviderSettings>> {
        policy::can_administer(actor)?;
        Ok(self.current().await?.map(|s| s.masked()))
    }

    /// Replaces the settings. Masked secrets keep their stored values; the input is validated
    /// before anything is stored, so a bad request changes nothing.
    pub async fn put(
        &self,
        actor: Option<&Actor>,
        providers: serde_json::Map<String, serde_json::Value>,
        default_model: &str,
        permission: Option<serde_json::Value>,
    ) -> Result<ProviderSettings> {
        policy::can_administer(actor)?;
        let mut settings = ProviderSettings { providers, default_model: ModelRef::parse(default_model)?, permission };
        let previous = self.current().await?;
        settings.restore_secrets(previous.as_ref())?;
        settings.validate()?;
        let ciphertext = self.cipher.encrypt(&settings.to_plaintext())?;
        self.repo.save(ciphertext).await?;
        let masked = settings.masked();
        self.cache.insert((), Some(settings));
        Ok(masked)
    }

    /// The settings with secrets in clear, for building a session's runtime. Never hand this
    /// to a client.
    pub async fn current(&self) -> Result<Option<ProviderSettings>> {
        if let Some(cached) = self.cache.get(&()) {
            return Ok(cached);
        }
        let settings = match self.repo.load().await? {
            None => None,
            Some(ct) => Some(ProviderSettings::from_plaintext(&self.cipher.decrypt(&ct)?)?),
        };
        self.cache.insert((), settings.clone());
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoreError;
    use crate::ports::{MockProviderRepository, MockSecretCipher};
    use crate::user::{Role, UserId};
    use serde_json::json;

    fn admin() -> Actor {
        Actor { id: UserId(uuid::Uuid::nil()), role: Role::Admin }
    }

    fn identity_cipher() -> MockSecretCipher {
        let mut c = MockSecretCipher::new();
        c.expect_encrypt().returning(|p| Ok(p.to_vec()));
        c.expect_decrypt().returning(|p| Ok(p.to_vec()));
        c
    }

    #[test]
    fn members_cannot_touch_providers_and_nothing_is_read() {
        let mut repo = MockProviderRepository::new();
        repo.expect_load().times(0);
        repo.expect_save().times(0);
        let svc = ProviderService::new(Arc::new(repo), Arc::new(identity_cipher()));
        let member = Actor { id: UserId(uuid::Uuid::nil()), role: Role::Member };
        let s: ProviderSettings = serde_json::from_value(json!({
            "providers": {"p": {"options": {"apiKey": "k"}}}, "defaultModel": "p/m"
        }))
        .unwrap();
        assert!(matches!(futures::executor::block_on(svc.get(Some(&member))), Err(CoreError::Forbidden(_))));
        assert!(matches!(
            futures::executor::block_on(svc.put(Some(&member), s.providers, "p/m", None)),
            Err(CoreError::Forbidden(_))
        ));
    }

    #[test]
    fn invalid_settings_are_never_saved() {
        let mut repo = MockProviderRepository::new();
        repo.expect_load().returning(|| Ok(None));
        repo.expect_save().times(0);
        let svc = ProviderService::new(Arc::new(repo), Arc::new(identity_cipher()));
        let s: ProviderSettings = serde_json::from_value(json!({
            "providers": {"p": {"options": {"apiKey": "k"}, "models": {"m": {}}}}, "defaultModel": "p/x"
        }))
        .unwrap();
        assert!(matches!(
            futures::executor::block_on(svc.put(Some(&admin()), s.providers, &s.default_model.to_string(), None)),
            Err(CoreError::InvalidInput { field: "defaultModel", .. })
        ));
    }

    #[test]
    fn saved_settings_are_encrypted_and_returned_masked() {
        let mut repo = MockProviderRepository::new();
        repo.expect_load().returning(|| Ok(None));
        repo.expect_save()
            .withf(|ct| ct.starts_with(b"ENC:") && !String::from_utf8_lossy(ct).contains("sk-live"))
            .times(1)
            .returning(|_| Ok(()));
        let mut cipher = MockSecretCipher::new();
        cipher.expect_encrypt().returning(|p| {
            let mut out = b"ENC:".to_vec();
            out.extend(p.iter().map(|b| b ^ 0x55));
            Ok(out)
        });
        let svc = ProviderService::new(Arc::new(repo), Arc::new(cipher));
        let s: ProviderSettings = serde_json::from_value(json!({
            "providers": {"p": {"options": {"apiKey": "sk-live"}}}, "defaultModel": "p/m"
        }))
        .unwrap();
        let shown = futures::executor::block_on(svc.put(Some(&admin()), s.providers, "p/m", None)).unwrap();
        assert_eq!(shown.providers["p"]["options"]["apiKey"], crate::provider::SECRET_MASK);
    }
}
