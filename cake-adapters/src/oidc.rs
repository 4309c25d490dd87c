//! [`OidcClient`]: OpenID Connect sign-in against one provider — discovery from the issuer,
//! authorization code flow with PKCE (`S256`), `state` and `nonce`, the ID token validated
//! against the issuer's key set (signature, `iss`, `aud`, `azp`, expiry, `nonce`), the user's
//! claims completed from the userinfo endpoint, and only a **verified** email accepted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cake_core::ports::{ExternalIdentity, OidcProvider};
use cake_core::{CoreError, Result};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::jwks::JwksVerifier;

/// Settings of one OpenID provider (`CAKE_OIDC_*`).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// `CAKE_OIDC_PROVIDER_ID`: the id in routes, e.g. `okta`.
    pub provider_id: String,
    /// `CAKE_OIDC_ISSUER`: the issuer URL; discovery is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// `CAKE_OIDC_CLIENT_ID`.
    pub client_id: String,
    /// `CAKE_OIDC_CLIENT_SECRET`; `None` for a public client (PKCE only).
    pub client_secret: Option<SecretString>,
    /// `CAKE_OIDC_SCOPES` (always including `openid`).
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

struct Discovered {
    doc: Discovery,
    jwks: JwksVerifier,
}

/// One OpenID provider.
pub struct OidcClient {
    config: OidcConfig,
    http: reqwest::Client,
    discovered: Mutex<Option<Arc<Discovered>>>,
}

fn refused(message: impl Into<String>) -> CoreError {
    CoreError::Refused { code: "oidc_refused", message: message.into() }
}

impl OidcClient {
    /// A client; the provider is contacted on first use (so the control plane starts even
    /// while the provider is down).
    pub fn new(mut config: OidcConfig, http: reqwest::Client) -> Self {
        config.issuer = config.issuer.trim_end_matches('/').to_owned();
        if !config.scopes.iter().any(|s| s == "openid") {
            config.scopes.insert(0, "openid".to_owned());
        }
        Self { config, http, discovered: Mutex::new(None) }
    }

    async fn discovered(&self) -> Result<Arc<Discovered>> {
        let mut slot = self.discovered.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer);
        // Details go to the log; the client learns only that the provider is unavailable.
        let unavailable = |e: String| {
            tracing::warn!(url = %url, problem = %e, "OpenID provider discovery failed");
            CoreError::Unavailable("the OpenID provider cannot be reached; try again later".into())
        };
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("status {}", resp.status())));
        }
        let doc: Discovery = resp.json().await.map_err(|e| unavailable(e.to_string()))?;
        if doc.issuer.trim_end_matches('/') != self.config.issuer {
            return Err(unavailable(format!("the document names issuer {:?}", doc.issuer)));
        }
        let jwks = JwksVerifier::new(doc.jwks_uri.clone(), self.http.clone());
        let d = Arc::new(Discovered { doc, jwks });
        *slot = Some(d.clone());
        Ok(d)
    }

    fn use_basic_auth(doc: &Discovery) -> bool {
        let m = &doc.token_endpoint_auth_methods_supported;
        m.is_empty() || m.iter().any(|x| x == "client_secret_basic") || !m.iter().any(|x| x == "client_secret_post")
    }

    async fn userinfo(&self, d: &Discovered, access_token: &str) -> Result<Map<String, Value>> {
        let Some(url) = &d.doc.userinfo_endpoint else { return Ok(Map::new()) };
        let resp = self.http.get(url).bearer_auth(access_token).timeout(Duration::from_secs(10)).send().await.map_err(
            |e| {
                tracing::warn!(error = %e, "OIDC: userinfo request failed");
                CoreError::Unavailable("the OpenID provider's userinfo endpoint did not answer".into())
            },
        )?;
        if !resp.status().is_success() {
            return Err(refused(format!("the userinfo endpoint answered {}", resp.status())));
        }
        resp.json().await.map_err(|_| refused("userinfo is not JSON"))
    }
}

fn email_verified(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

#[async_trait]
impl OidcProvider for OidcClient {
    fn provider_id(&self) -> &str {
        &self.config.provider_id
    }

    async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_verifier: &SecretString,
    ) -> Result<String> {
        let d = self.discovered().await?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.expose_secret().as_bytes()));
        let mut url = Url::parse(&d.doc.authorization_endpoint)
            .map_err(|e| CoreError::Unavailable(format!("bad authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    async fn exchange(
        &self,
        redirect_uri: &str,
        code: &str,
        code_verifier: &SecretString,
        nonce: &str,
    ) -> Result<ExternalIdentity> {
        let d = self.discovered().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier.expose_secret()),
        ];
        let mut req = self.http.post(&d.doc.token_endpoint).timeout(Duration::from_secs(15));
        match &self.config.client_secret {
            Some(secret) if Self::use_basic_auth(&d.doc) => {
                // RFC 6749 §2.3.1: both parts form-encoded before Basic.
                req = req.basic_auth(url_encode(&self.config.client_id), Some(url_encode(secret.expose_secret())));
            }
            Some(secret) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret.expose_secret()));
            }
            None => form.push(("client_id", &self.config.client_id)),
        }
        let resp = req.form(&form).send().await.map_err(|e| {
            tracing::warn!(error = %e, "OIDC: token request failed");
            CoreError::Unavailable("the OpenID provider's token endpoint did not answer".into())
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let err = body.get("error").and_then(Value::as_str).unwrap_or("unknown");
            return Err(refused(format!("the provider refused the code ({status}, {err})")));
        }
        let id_token = body.get("id_token").and_then(Value::as_str).ok_or_else(|| refused("no ID token"))?;
        let client_id = self.config.client_id.clone();
        let issuer = d.doc.issuer.clone();
        let claims = d
            .jwks
            .verify(id_token, |v| {
                v.set_issuer(&[issuer]);
                v.set_audience(&[client_id]);
                v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OIDC: ID token refused");
                refused("the ID token is not valid for this sign-in")
            })?;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(refused("ID token nonce does not match this sign-in"));
        }
        // The token must have been issued to us (OIDC Core 3.1.3.7): a present `azp` names
        // this client, and with several audiences it must be present.
        let azp = claims.get("azp").and_then(Value::as_str);
        let several = claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1);
        if azp.is_some_and(|a| a != self.config.client_id) || (several && azp.is_none()) {
            return Err(refused("ID token was issued to another client"));
        }
        let mut merged = claims;
        if let Some(access) = body.get("access_token").and_then(Value::as_str) {
            let info = self.userinfo(&d, access).await?;
            // OIDC Core 5.3.4: a userinfo answer without the ID token's `sub` is not used.
            if info.get("sub").is_none() || info.get("sub") != merged.get("sub") {
                return Err(refused("userinfo is about another subject"));
            }
            // Email and its verification come from one source: the ID token's if it has an
            // email, else userinfo's.
            let from_token = merged.contains_key("email");
            for (k, v) in info {
                if (k == "email" || k == "email_verified") && from_token {
                    continue;
                }
                merged.entry(k).or_insert(v);
            }
        }
        let email = merged
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| refused("the provider gave no email (is the `email` scope allowed?)"))?;
        if !email_verified(merged.get("email_verified")) {
            return Err(refused("the provider has not verified this email"));
        }
        let name = merged.get("name").and_then(Value::as_str).map(str::to_owned);
        Ok(ExternalIdentity { email: email.to_owned(), name })
    }
}

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
