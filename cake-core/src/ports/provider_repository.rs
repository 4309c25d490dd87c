use async_trait::async_trait;

use crate::Result;

/// Stores the organisation's provider settings as one encrypted blob.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ProviderRepository: Send + Sync {
    /// The stored ciphertext, if providers were ever configured.
    async fn load(&self) -> Result<Option<Vec<u8>>>;
    /// Replaces the stored ciphertext.
    async fn save(&self, ciphertext: Vec<u8>) -> Result<()>;
}
