//! Who is asking (DESIGN.md, "Authentication"): a signed Better-Auth-shaped session cookie, or
//! `Authorization: Bearer cake_…` (an API token). The [`resolve`] middleware puts an
//! [`Identity`] into every request; handlers pass `identity.actor()` to the services, whose
//! policy answers anonymous callers with 401. Identity resolution decides nothing else.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cake_core::user::{Actor, User};
use hmac::{Hmac, Mac};
use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::state::AppState;

/// The cookie's name over plain HTTP.
pub const COOKIE_NAME: &str = "better-auth.session_token";
/// The cookie's name over HTTPS (browsers only accept it with `Secure`).
pub const SECURE_COOKIE_NAME: &str = "__Secure-better-auth.session_token";

/// The resolved identity of a request; anonymous when `user` is `None`.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The signed-in user.
    pub user: Option<User>,
    /// The raw cookie token (for sign-out and get-session).
    pub cookie_token: Option<String>,
}

impl Identity {
    /// The actor, for the services.
    pub fn actor(&self) -> Option<Actor> {
        self.user.as_ref().map(User::actor)
    }
}

/// Signs cookie values as Better Auth does: `<token>.<base64 HMAC-SHA256(secret, token)>`.
pub struct CookieSigner {
    key: SecretString,
    secure: bool,
    max_age_secs: i64,
}

impl CookieSigner {
    /// A signer; `secure` when the public URL is https.
    pub fn new(key: SecretString, secure: bool, max_age_secs: i64) -> Self {
        Self { key, secure, max_age_secs }
    }

    fn mac(&self, token: &str) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes()) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(token.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// The name of the cookie this installation sets.
    pub fn name(&self) -> &'static str {
        if self.secure { SECURE_COOKIE_NAME } else { COOKIE_NAME }
    }

    /// Verifies a cookie value and returns the token inside.
    pub fn verify(&self, raw: &str) -> Option<String> {
        let value = percent_encoding::percent_decode_str(raw).decode_utf8().ok()?;
        let (token, sig) = value.rsplit_once('.')?;
        let expected = self.mac(token);
        let ok = !expected.is_empty()
            && expected.len() == sig.len()
            && expected.bytes().zip(sig.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        ok.then(|| token.to_owned())
    }

    /// `Set-Cookie` for a new session token.
    pub fn set_cookie(&self, token: &str) -> String {
        let value = format!("{token}.{}", self.mac(token));
        let encoded = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string();
        format!(
            "{}={encoded}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
            self.name(),
            self.max_age_secs,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` that removes the cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            self.name(),
            if self.secure { "; Secure" } else { "" }
        )
    }
}

fn cookie_value<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(poem::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn identify(state: &AppState, req: &Request) -> Identity {
    for name in [SECURE_COOKIE_NAME, COOKIE_NAME] {
        let Some(token) = cookie_value(req, name).and_then(|raw| state.cookies.verify(raw)) else { continue };
        match state.auth.session_for_token(&token).await {
            Ok(Some((_, user))) => {
                return Identity { user: Some(user), cookie_token: Some(token) };
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "session lookup failed"),
        }
    }
    let bearer = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    if let Some(token) = bearer {
        match state.auth.user_for_api_token(token).await {
            Ok(Some(user)) => return Identity { user: Some(user), cookie_token: None },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "API token lookup failed"),
        }
    }
    Identity::default()
}

/// Middleware: resolves the [`Identity`] of every request into its extensions.
pub async fn resolve<E: Endpoint>(state: Arc<AppState>, ep: E, mut req: Request) -> poem::Result<Response> {
    let identity = identify(&state, &req).await;
    req.extensions_mut().insert(identity);
    Ok(ep.call(req).await?.into_response())
}

/// Adds a `Set-Cookie` header.
pub fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(poem::http::header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_cookie_round_trip_and_tampering() {
        let s = CookieSigner::new(SecretString::from("k".to_owned()), false, 60);
        let header = s.set_cookie("abc");
        let value = header.split(';').next().unwrap().split_once('=').unwrap().1;
        assert_eq!(s.verify(value).as_deref(), Some("abc"));
        let other = CookieSigner::new(SecretString::from("k2".to_owned()), false, 60);
        assert!(other.verify(value).is_none());
        assert!(s.verify("abc.AAAA").is_none());
        assert!(s.verify("abc").is_none());
        assert!(header.contains("HttpOnly") && header.contains("SameSite=Lax") && !header.contains("Secure"));
        let secure = CookieSigner::new(SecretString::from("k".to_owned()), true, 60);
        assert!(
            secure.set_cookie("t").starts_with("__Secure-better-auth.session_token=")
                && secure.set_cookie("t").contains("; Secure")
        );
    }
}
