//! [`HeaderAuth`]: identity from a trusted upstream proxy, exactly as seed 002 describes it —
//! the configured JWT header decoded **without** signature verification, email and name taken
//! from its claims, the plain email / name headers as per-field fallbacks — plus two hardening
//! options beyond the seed, both off by default so the seed's behaviour stays exact:
//!
//! - `trusted_proxies`: identity headers are read only when the TCP peer is inside one of these
//!   networks; from anyone else they are ignored (and logged);
//! - `jwks`: the JWT's signature and expiry are verified against a key set; a token that fails
//!   is a 401, and the email must then come from a verified token (a plain email header alone
//!   no longer signs anyone in; the name header still fills in a missing name claim).

use std::sync::Arc;

use async_trait::async_trait;
use cake_core::ports::{ExternalIdentity, HeaderIdentity, HeaderRequest};
use cake_core::{CoreError, Result};
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::jwks::JwksVerifier;

/// Settings of header auth: the seed's table, plus the hardening options.
#[derive(Debug, Clone, Default)]
pub struct HeaderAuthConfig {
    /// `CAKE_HEADER_AUTH_EMAIL_HEADER`: header with the email when no JWT provides it.
    pub email_header: Option<String>,
    /// `CAKE_HEADER_AUTH_EMAIL_CLAIM` (default `email`).
    pub email_claim: String,
    /// `CAKE_HEADER_AUTH_JWT_HEADER`: header with a JWT carrying identity claims.
    pub jwt_header: Option<String>,
    /// `CAKE_HEADER_AUTH_USER`: header with the display name when no JWT provides it.
    pub user_header: Option<String>,
    /// `CAKE_HEADER_AUTH_USER_CLAIM` (default `name`).
    pub user_claim: String,
    /// `CAKE_HEADER_AUTH_TRUSTED_PROXIES`: peers allowed to assert identities (empty: all).
    pub trusted_proxies: Vec<IpNet>,
    /// `CAKE_HEADER_AUTH_JWT_ISSUER`: with JWKS verification, the `iss` the token must carry.
    pub jwt_issuer: Option<String>,
    /// `CAKE_HEADER_AUTH_JWT_AUDIENCE`: with JWKS verification, an `aud` the token must carry
    /// (unset: the audience is not checked).
    pub jwt_audience: Option<String>,
}

/// Header auth (seed 002).
pub struct HeaderAuth {
    config: HeaderAuthConfig,
    jwks: Option<Arc<JwksVerifier>>,
    /// When the last "untrusted peer" warning was logged (seconds since start), so a flood of
    /// such requests cannot flood the log.
    last_untrusted_warning: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

impl HeaderAuth {
    /// Header auth with these settings; `jwks` turns on signature verification.
    pub fn new(mut config: HeaderAuthConfig, jwks: Option<Arc<JwksVerifier>>) -> Self {
        let lower = |h: &mut Option<String>| {
            *h = h.take().map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty());
        };
        lower(&mut config.email_header);
        lower(&mut config.jwt_header);
        lower(&mut config.user_header);
        Self {
            config,
            jwks,
            last_untrusted_warning: std::sync::atomic::AtomicU64::new(u64::MAX),
            started: std::time::Instant::now(),
        }
    }

    fn warn_untrusted(&self, request: &HeaderRequest) {
        use std::sync::atomic::Ordering;
        let now = self.started.elapsed().as_secs();
        let last = self.last_untrusted_warning.load(Ordering::Relaxed);
        if (last == u64::MAX || now.saturating_sub(last) >= 60)
            && self.last_untrusted_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                peer = ?request.peer,
                "header auth: identity headers from a peer outside CAKE_HEADER_AUTH_TRUSTED_PROXIES ignored \
                 (logged at most once a minute)"
            );
        }
    }

    /// Whether this configuration can sign anyone in (the seed: "set `jwt.header` or
    /// `email.header` for the plugin to do anything").
    pub fn is_effective(&self) -> bool {
        self.config.jwt_header.is_some() || self.config.email_header.is_some()
    }

    fn peer_trusted(&self, request: &HeaderRequest) -> bool {
        if self.config.trusted_proxies.is_empty() {
            return true;
        }
        request.peer.is_some_and(|ip| {
            let ip = match ip {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            self.config.trusted_proxies.iter().any(|net| net.contains(&ip))
        })
    }

    async fn claims(&self, token: &str) -> Result<Option<Map<String, Value>>> {
        match &self.jwks {
            Some(jwks) => match jwks
                .verify(token, |v| {
                    // A configured claim must be present, not merely right when present.
                    if let Some(iss) = &self.config.jwt_issuer {
                        v.set_issuer(&[iss]);
                        v.required_spec_claims.insert("iss".into());
                    }
                    match &self.config.jwt_audience {
                        Some(aud) => {
                            v.set_audience(&[aud]);
                            v.required_spec_claims.insert("aud".into());
                        }
                        None => v.validate_aud = false,
                    }
                })
                .await
            {
                Ok(claims) => Ok(Some(claims)),
                Err(e) => {
                    tracing::warn!(error = %e, "header auth: JWT refused");
                    Err(CoreError::Unauthenticated)
                }
            },
            None => match jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token) {
                Ok(claims) => Ok(Some(claims)),
                Err(e) => {
                    // The seed: fall back to the plain headers; never an error.
                    tracing::debug!(error = %e, "header auth: JWT not decodable, using plain headers");
                    Ok(None)
                }
            },
        }
    }
}

fn claim(claims: Option<&Map<String, Value>>, name: &str) -> Option<String> {
    claims?.get(name)?.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn header(request: &HeaderRequest, name: Option<&str>) -> Option<String> {
    request.header(name?).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

#[async_trait]
impl HeaderIdentity for HeaderAuth {
    fn header_names(&self) -> Vec<String> {
        [&self.config.jwt_header, &self.config.email_header, &self.config.user_header]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    async fn identify(&self, request: &HeaderRequest) -> Result<Option<ExternalIdentity>> {
        if request.headers.is_empty() {
            return Ok(None);
        }
        if !self.peer_trusted(request) {
            self.warn_untrusted(request);
            return Ok(None);
        }
        // Proxies that forward an access token in `Authorization` send it as `Bearer <jwt>`.
        let token = header(request, self.config.jwt_header.as_deref()).map(|t| match t.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim().to_owned(),
            _ => t,
        });
        let claims = match &token {
            Some(t) => self.claims(t).await?,
            None => None,
        };
        let email = claim(claims.as_ref(), &self.config.email_claim).or_else(|| {
            // With verification on, the email is only believed from a verified token.
            if self.jwks.is_some() { None } else { header(request, self.config.email_header.as_deref()) }
        });
        let Some(email) = email else { return Ok(None) };
        let name = claim(claims.as_ref(), &self.config.user_claim)
            .or_else(|| header(request, self.config.user_header.as_deref()));
        Ok(Some(ExternalIdentity { email, name }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        format!("{h}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    fn auth(jwt_header: Option<&str>, email_header: Option<&str>, user_header: Option<&str>) -> HeaderAuth {
        HeaderAuth::new(
            HeaderAuthConfig {
                email_header: email_header.map(Into::into),
                email_claim: "email".into(),
                jwt_header: jwt_header.map(Into::into),
                user_header: user_header.map(Into::into),
                user_claim: "name".into(),
                trusted_proxies: Vec::new(),
                jwt_issuer: None,
                jwt_audience: None,
            },
            None,
        )
    }

    fn req(headers: &[(&str, String)]) -> HeaderRequest {
        HeaderRequest { peer: None, headers: headers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect() }
    }

    #[tokio::test]
    async fn jwt_wins_per_field_and_headers_fill_in() {
        let a = auth(Some("X-Jwt"), Some("x-email"), Some("x-user"));
        assert_eq!(a.header_names(), vec!["x-jwt", "x-email", "x-user"]);
        let r = req(&[
            ("x-jwt", jwt(serde_json::json!({"email": "jwt@example.com"}))),
            ("x-email", "hdr@example.com".into()),
            ("x-user", "Header Name".into()),
        ]);
        let id = a.identify(&r).await.unwrap().unwrap();
        assert_eq!(id, ExternalIdentity { email: "jwt@example.com".into(), name: Some("Header Name".into()) });
        let garbage = req(&[("x-jwt", "not.a.jwt".into()), ("x-email", "hdr@example.com".into())]);
        assert_eq!(a.identify(&garbage).await.unwrap().unwrap().email, "hdr@example.com");
        assert!(a.identify(&req(&[("x-user", "Only Name".into())])).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn untrusted_peers_are_ignored() {
        let mut a = auth(None, Some("x-email"), None);
        a.config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let mut r = req(&[("x-email", "a@example.com".into())]);
        r.peer = Some("192.168.1.1".parse().unwrap());
        assert!(a.identify(&r).await.unwrap().is_none());
        r.peer = None;
        assert!(a.identify(&r).await.unwrap().is_none());
        r.peer = Some("::ffff:10.1.2.3".parse().unwrap());
        assert!(a.identify(&r).await.unwrap().is_some());
        r.peer = Some("::1".parse().unwrap());
        assert!(a.identify(&r).await.unwrap().is_some());
    }
}
