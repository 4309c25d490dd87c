//! [`JwksVerifier`]: verifies JWT signatures against a JSON Web Key Set fetched from a URL
//! (an OpenID provider's `jwks_uri`, or `CAKE_HEADER_AUTH_JWKS_URL`). Keys are cached and the
//! set is fetched again when a token names a `kid` the cache does not know (at most once per
//! [`JwksVerifier::MIN_REFRESH`], so unknown-`kid` tokens cannot make us hammer the issuer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

/// Why a token was not accepted. The text is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token is malformed, has a bad signature, is expired, or fails a claim check.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// No key of the set matches the token (unknown `kid`).
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    /// The key set could not be fetched.
    #[error("key set unavailable: {0}")]
    Unavailable(String),
}

/// The algorithms accepted: asymmetric only (never `none` or a shared-secret HMAC, which a
/// public key would turn into a forgery).
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

struct Cache {
    keys: Option<JwkSet>,
    fetched: Option<Instant>,
}

/// Verifies JWTs against a remote key set.
#[derive(Clone)]
pub struct JwksVerifier {
    url: String,
    http: reqwest::Client,
    cache: Arc<Mutex<Cache>>,
}

impl JwksVerifier {
    /// The shortest time between two fetches of the key set.
    pub const MIN_REFRESH: Duration = Duration::from_secs(5);

    /// A verifier for the key set at `url`; nothing is fetched before the first token.
    pub fn new(url: impl Into<String>, http: reqwest::Client) -> Self {
        Self { url: url.into(), http, cache: Arc::new(Mutex::new(Cache { keys: None, fetched: None })) }
    }

    async fn fetch(&self) -> Result<JwkSet, VerifyError> {
        let resp = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| VerifyError::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(VerifyError::Unavailable(format!("{} answered {}", self.url, resp.status())));
        }
        let body: Value = resp.json().await.map_err(|e| VerifyError::Unavailable(e.to_string()))?;
        // Keys of a kind this library does not know are skipped, not fatal for the whole set.
        let keys = body
            .get("keys")
            .and_then(Value::as_array)
            .map(|ks| ks.iter().filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok()).collect())
            .unwrap_or_default();
        Ok(JwkSet { keys })
    }

    /// The keys that may have signed a token with this `kid` and algorithm, fetching the set
    /// on first use and again (rate-limited) when the `kid` is unknown.
    async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<DecodingKey>, VerifyError> {
        let mut cache = self.cache.lock().await;
        let may_fetch = cache.fetched.is_none_or(|t| t.elapsed() >= Self::MIN_REFRESH);
        if cache.keys.is_some() {
            let found = matching(cache.keys.as_ref(), kid, alg);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        // First use, or an unknown key (the issuer may have rotated): fetch again unless we
        // just tried — failures count too, so an unreachable key set is not asked per request.
        if !may_fetch {
            return match cache.keys {
                Some(_) => Err(VerifyError::UnknownKey(kid.map(str::to_owned))),
                None => Err(VerifyError::Unavailable("key set fetch failed moments ago".into())),
            };
        }
        cache.fetched = Some(Instant::now());
        let set = self.fetch().await?;
        cache.keys = Some(set);
        let found = matching(cache.keys.as_ref(), kid, alg);
        if found.is_empty() { Err(VerifyError::UnknownKey(kid.map(str::to_owned))) } else { Ok(found) }
    }

    /// Verifies the token's signature with a key of the set and the claims `validation`
    /// asks for, and returns its claims. The algorithm is the token's own, but only one of
    /// [`ALLOWED_ALGORITHMS`] and only with a key that is meant for it.
    pub async fn verify(
        &self,
        token: &str,
        configure: impl FnOnce(&mut Validation),
    ) -> Result<Map<String, Value>, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| VerifyError::Invalid(e.to_string()))?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(VerifyError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let keys = self.keys_for(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp"]);
        configure(&mut validation);
        let mut last = None;
        for key in &keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(VerifyError::Invalid(last.map(|e| e.to_string()).unwrap_or_else(|| "no key".into())))
    }
}

fn matching(set: Option<&JwkSet>, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
    let Some(set) = set else { return Vec::new() };
    set.keys
        .iter()
        .filter(|k| match kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid),
            None => true,
        })
        .filter(|k| {
            // A key that names its algorithm is used only for that one.
            k.common.key_algorithm.is_none_or(|ka| format!("{ka:?}") == format!("{alg:?}"))
        })
        .filter(|k| DecodingKey::from_jwk(k).map(|d| d.family() == alg.family()).unwrap_or(false))
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .collect()
}
