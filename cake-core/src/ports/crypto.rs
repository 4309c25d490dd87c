use secrecy::SecretString;

use crate::Result;

/// Encrypts secrets at rest (AES-256-GCM in `cake-adapters::crypto`); the key id travels with
/// the ciphertext so keys can rotate.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait SecretCipher: Send + Sync {
    /// Encrypts.
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>>;
    /// Decrypts and authenticates.
    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>>;
}

/// Hashes passwords (argon2id). Async: the work is CPU-heavy by design, and an adapter runs it
/// off the async workers, a bounded number at a time.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait::async_trait]
pub trait PasswordHasher: Send + Sync {
    /// Hashes a password into a PHC string.
    async fn hash(&self, password: &SecretString) -> Result<String>;
    /// Checks a password against a PHC string.
    async fn verify(&self, password: &SecretString, hash: &str) -> bool;
}

/// Makes and digests bearer secrets: browser-session tokens, API tokens, runtime passwords.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait TokenGenerator: Send + Sync {
    /// A fresh random secret (at least 256 bits, URL-safe).
    fn generate(&self) -> SecretString;
    /// The digest under which a token is stored and looked up.
    fn digest(&self, token: &str) -> Vec<u8>;
}

/// Derives secrets from the installation key: the same input gives the same secret on every
/// replica and after a restart, so a secret handed to a runtime (a session's broker token)
/// can be handed again without being stored; only its digest is.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
pub trait TokenDeriver: Send + Sync {
    /// The secret for `input` under `purpose` (at least 256 bits, URL-safe).
    fn derive(&self, purpose: &str, input: &[u8]) -> SecretString;
}
