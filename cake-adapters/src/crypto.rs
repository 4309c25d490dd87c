//! Secrets at rest, passwords and tokens.
//!
//! - [`AesCipher`]: AES-256-GCM with a key derived from `BETTER_AUTH_SECRET` by HKDF-SHA256.
//!   Ciphertext layout: `key id (1 byte) ‖ nonce (12 bytes) ‖ ciphertext+tag`. The key id lets
//!   keys rotate: a cipher decrypts with any key it knows and encrypts with the newest.
//! - [`Argon2Hasher`]: argon2id PHC strings (OWASP's parameters: 19 MiB, 2 passes).
//! - [`RandomTokens`]: 256-bit random URL-safe tokens, stored as SHA-256 digests.
//! - [`HmacDeriver`]: secrets derived by HMAC-SHA256 under a purpose-bound key (a session's
//!   broker token), the same on every replica.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cake_core::ports::{PasswordHasher, SecretCipher, TokenDeriver, TokenGenerator};
use cake_core::{CoreError, Result};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Derives a purpose-bound 32-byte key from the installation secret, so the cookie-signing key
/// and the encryption key are never the same bytes.
pub fn derive_key(secret: &SecretString, purpose: &str) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"cake-agents/v1"), secret.expose_secret().as_bytes());
    let mut key = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = hk.expand(purpose.as_bytes(), &mut key);
    key
}

/// AES-256-GCM secrets at rest.
pub struct AesCipher {
    /// `(key id, cipher)`; the last one encrypts.
    keys: Vec<(u8, Aes256Gcm)>,
}

impl AesCipher {
    /// A cipher with one key, id 1, derived from the installation secret.
    pub fn from_secret(secret: &SecretString) -> Self {
        let key = derive_key(secret, "secrets-at-rest");
        Self { keys: vec![(1, Aes256Gcm::new(&key.into()))] }
    }

    /// Adds a newer key (used for new ciphertexts; older ones stay readable).
    pub fn with_key(mut self, id: u8, secret: &SecretString) -> Self {
        let key = derive_key(secret, "secrets-at-rest");
        self.keys.push((id, Aes256Gcm::new(&key.into())));
        self
    }
}

impl SecretCipher for AesCipher {
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let (id, cipher) = self.keys.last().ok_or_else(|| CoreError::internal("no encryption key"))?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| CoreError::internal("encryption failed"))?;
        let mut out = Vec::with_capacity(13 + ct.len());
        out.push(*id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        if ciphertext.len() < 13 + 16 {
            return Err(CoreError::internal("ciphertext too short"));
        }
        let (id, rest) = (ciphertext[0], &ciphertext[1..]);
        let (nonce, ct) = rest.split_at(12);
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| *k == id)
            .ok_or_else(|| CoreError::internal(format!("unknown encryption key id {id}")))?;
        cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| CoreError::internal("stored secrets cannot be decrypted: was BETTER_AUTH_SECRET changed?"))
    }
}

/// argon2id password hashes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Argon2Hasher;

/// At most one argon2 computation per CPU at a time (each takes tens of milliseconds and
/// 19 MiB by design): a flood of sign-ins waits as parked tasks, not as threads, and costs
/// bounded memory.
fn argon2_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    })
}

/// Runs argon2 work on the blocking pool once a permit is free, so the async workers keep
/// serving other requests meanwhile.
async fn cpu_bound<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = argon2_permits().acquire().await.map_err(CoreError::internal)?;
    tokio::task::spawn_blocking(work).await.map_err(CoreError::internal)
}

#[async_trait::async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &SecretString) -> Result<String> {
        let password = password.clone();
        cpu_bound(move || Self::hash_now(&password)).await?
    }

    async fn verify(&self, password: &SecretString, hash: &str) -> bool {
        let (password, hash) = (password.clone(), hash.to_owned());
        cpu_bound(move || Self::verify_now(&password, &hash)).await.unwrap_or(false)
    }
}

impl Argon2Hasher {
    fn hash_now(password: &SecretString) -> Result<String> {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| CoreError::internal(e.to_string()))?;
        argon2::Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CoreError::internal(e.to_string()))
    }

    fn verify_now(password: &SecretString, hash: &str) -> bool {
        PasswordHash::new(hash)
            .map(|h| argon2::Argon2::default().verify_password(password.expose_secret().as_bytes(), &h).is_ok())
            .unwrap_or(false)
    }
}

/// Random tokens and their SHA-256 digests.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomTokens;

impl TokenGenerator for RandomTokens {
    fn generate(&self) -> SecretString {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn digest(&self, token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }
}

/// Derived secrets: HMAC-SHA256 of the input under a key derived (HKDF) from the installation
/// secret and the purpose, URL-safe base64. Changing `BETTER_AUTH_SECRET` changes them all.
pub struct HmacDeriver {
    secret: SecretString,
}

impl HmacDeriver {
    /// A deriver keyed by the installation secret.
    pub fn from_secret(secret: &SecretString) -> Self {
        Self { secret: secret.clone() }
    }
}

impl TokenDeriver for HmacDeriver {
    fn derive(&self, purpose: &str, input: &[u8]) -> SecretString {
        let key = derive_key(&self.secret, &format!("derived-token:{purpose}"));
        // A key shorter than the block is zero-padded by HMAC itself: the same MAC as keying
        // with the 32 bytes, without a fallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(input);
        SecretString::from(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_tokens_depend_on_secret_purpose_and_input() {
        let a = HmacDeriver::from_secret(&SecretString::from("secret-a".to_owned()));
        let b = HmacDeriver::from_secret(&SecretString::from("secret-b".to_owned()));
        let t = |d: &HmacDeriver, p: &str, i: &[u8]| d.derive(p, i).expose_secret().to_owned();
        assert_eq!(t(&a, "p", b"1"), t(&a, "p", b"1"));
        assert_eq!(t(&a, "p", b"1").len(), 43);
        assert_ne!(t(&a, "p", b"1"), t(&b, "p", b"1"));
        assert_ne!(t(&a, "p", b"1"), t(&a, "q", b"1"));
        assert_ne!(t(&a, "p", b"1"), t(&a, "p", b"2"));
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let c = AesCipher::from_secret(&SecretString::from("s3cret".to_owned()));
        let ct = c.encrypt(b"sk-live-key").unwrap();
        assert!(!ct.windows(11).any(|w| w == b"sk-live-key"));
        assert_eq!(c.decrypt(&ct).unwrap(), b"sk-live-key");
        let mut bad = ct.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(c.decrypt(&bad).is_err());
        let other = AesCipher::from_secret(&SecretString::from("other".to_owned()));
        assert!(other.decrypt(&ct).is_err());
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let old = AesCipher::from_secret(&SecretString::from("k1".to_owned()));
        let ct = old.encrypt(b"x").unwrap();
        let new = AesCipher::from_secret(&SecretString::from("k1".to_owned()))
            .with_key(2, &SecretString::from("k2".to_owned()));
        assert_eq!(new.decrypt(&ct).unwrap(), b"x");
        assert_eq!(new.encrypt(b"y").unwrap()[0], 2);
    }

    #[tokio::test]
    async fn argon2id_verifies() {
        let h = Argon2Hasher.hash(&SecretString::from("correct horse".to_owned())).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(Argon2Hasher.verify(&SecretString::from("correct horse".to_owned()), &h).await);
        assert!(!Argon2Hasher.verify(&SecretString::from("wrong".to_owned()), &h).await);
        assert!(!Argon2Hasher.verify(&SecretString::from("x".to_owned()), "not a hash").await);
    }

    #[test]
    fn tokens_are_random_and_digested() {
        let a = RandomTokens.generate();
        let b = RandomTokens.generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 43);
        assert_eq!(RandomTokens.digest("x").len(), 32);
    }
}
