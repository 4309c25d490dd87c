//! Who is asking (DESIGN.md, "Authentication"), in this order: a signed Better-Auth-shaped
//! session cookie; `Authorization: Bearer cake_…` (an API token); when enabled, a trusted
//! proxy's identity headers (seed 002), which create a session and set its cookie on the
//! response. The [`resolve`] middleware puts an [`Identity`] into every request; handlers pass
//! `identity.actor()` to the services, whose policy answers anonymous callers with 401.
//!
//! It also guards against cross-site request forgery: a write (`POST`, `PUT`, `PATCH`,
//! `DELETE`) whose `Origin` (or `Referer`) is not this site is refused with 403
//! `csrf_origin`, and a write authenticated by an ambient credential (the cookie, or proxy
//! headers) must name its origin. Bearer-token requests carry no ambient credential and are
//! not checked.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cake_core::ports::HeaderRequest;
use cake_core::user::{Actor, User};
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::error::{self, ApiError};
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
    /// Whether a browser sends the credential by itself (cookie, proxy headers): such writes
    /// need an `Origin` of this site.
    pub ambient: bool,
    /// A `Set-Cookie` to add to the response (a session created by header auth, or a sliding
    /// refresh).
    pub set_cookie: Option<String>,
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
    path_prefix: String,
}

impl CookieSigner {
    /// A signer; `secure` when the public URL is https.
    pub fn new(key: SecretString, secure: bool, max_age_secs: i64) -> Self {
        Self { key, secure, max_age_secs, path_prefix: String::new() }
    }

    /// The signer of an installation served under `CAKE_PATH_PREFIX`.
    pub fn with_path_prefix(mut self, prefix: &str) -> Self {
        self.path_prefix = prefix.to_owned();
        self
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

    /// The name of the cookie binding an OIDC sign-in to the browser that started it.
    pub fn state_cookie_name(&self) -> &'static str {
        if self.secure { "__Secure-better-auth.oauth_state" } else { "better-auth.oauth_state" }
    }

    /// `Set-Cookie` binding an OIDC sign-in's `state` to this browser for 10 minutes. Scoped to
    /// the auth routes; `SameSite=Lax` so it comes back on the provider's top-level redirect.
    pub fn state_cookie(&self, state: &str) -> String {
        let value = format!("{state}.{}", self.mac(state));
        let encoded = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string();
        format!(
            "{}={encoded}; Path={}/api/auth; HttpOnly; SameSite=Lax; Max-Age=600{}",
            self.state_cookie_name(),
            self.path_prefix,
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

/// The raw value of a request cookie.
pub fn cookie_pairs<'a>(req: &'a Request) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    req.headers()
        .get_all(poem::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

/// Every value of a request cookie (a browser sends several when they differ in path or domain).
pub fn cookie_values<'a>(req: &'a Request, name: &str) -> Vec<&'a str> {
    cookie_pairs(req).filter(|(k, _)| *k == name).map(|(_, v)| v).collect()
}

/// The client's address: the TCP peer, or — when the peer is one of the trusted proxies — the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(req: &Request, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer_ip(req)?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    Some(forwarded.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer))
}

/// The TCP peer's IP address (IPv4-mapped IPv6 unwrapped).
pub fn peer_ip(req: &Request) -> Option<IpAddr> {
    let ip = req.remote_addr().as_socket_addr()?.ip();
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    })
}

async fn identify(state: &AppState, req: &Request) -> Result<Identity, Box<Response>> {
    // Only this installation's cookie name (over https the `__Secure-` one, which a plain-http
    // attacker or a sibling subdomain cannot plant), and only when the request carries exactly
    // one: a second, planted cookie of the same name makes the cookie no identity at all.
    let values = cookie_values(req, state.cookies.name());
    if let [raw] = values.as_slice()
        && let Some(token) = state.cookies.verify(raw)
    {
        match state.auth.session_for_token(&token).await {
            Ok(Some((session, user))) => {
                let set_cookie = match state.auth.refresh_if_due(&token, &session).await {
                    Ok(Some(_)) => Some(state.cookies.set_cookie(&token)),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "session refresh failed");
                        None
                    }
                };
                return Ok(Identity { user: Some(user), cookie_token: Some(token), ambient: true, set_cookie });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "session lookup failed"),
        }
    } else if values.len() > 1 {
        tracing::warn!(count = values.len(), "request carries several session cookies; none is used");
    }
    let bearer = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    if let Some(token) = bearer {
        match state.auth.user_for_api_token(token).await {
            Ok(Some(user)) => return Ok(Identity { user: Some(user), ..Identity::default() }),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "API token lookup failed"),
        }
    }
    if state.auth.header_auth_enabled() {
        let mut repeated = false;
        let headers: Vec<(String, String)> = state
            .auth
            .header_names()
            .into_iter()
            .filter_map(|name| {
                let mut all = req.headers().get_all(name.as_str()).iter();
                let first = all.next()?;
                // A proxy that appends instead of replacing would let the client's own copy
                // through: an identity header given twice is no identity.
                repeated |= all.next().is_some();
                let value = std::str::from_utf8(first.as_bytes()).ok()?.to_owned();
                Some((name, value))
            })
            .collect();
        let from_session =
            !headers.is_empty() && peer_ip(req).is_some_and(|ip| state.sessions.is_data_plane_address(ip));
        if repeated {
            tracing::warn!("an identity header appears more than once; header auth ignores the request");
        } else if from_session {
            // Code an agent runs in a session pod must not claim to be anyone.
            tracing::warn!("identity headers from a session's data plane; header auth ignores the request");
        } else if !headers.is_empty() {
            let request = HeaderRequest { peer: peer_ip(req), headers };
            match state.auth.sign_in_with_headers(&request).await {
                Ok(Some(signed_in)) => {
                    let token = signed_in.token.expose_secret().to_owned();
                    let set_cookie = Some(state.cookies.set_cookie(&token));
                    return Ok(Identity {
                        user: Some(signed_in.user),
                        cookie_token: Some(token),
                        ambient: true,
                        set_cookie,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "header auth refused the request");
                    return Err(Box::new(ApiError::from(e).into_response()));
                }
            }
        }
    }
    Ok(Identity::default())
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// `scheme://host[:port]` of the request's `Origin`, else of its `Referer`.
fn request_origin(req: &Request) -> Option<String> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(origin) = header(poem::http::header::ORIGIN) {
        return Some(origin.to_owned());
    }
    let referer = header(poem::http::header::REFERER)?;
    let after_scheme = referer.find("://")? + 3;
    let end = referer[after_scheme..].find('/').map_or(referer.len(), |i| after_scheme + i);
    Some(referer[..end].to_owned())
}

/// Whether `origin` is this site: `CAKE_PUBLIC_URL`'s origin or one of the allowed ones.
/// The `Host` header is not trusted for this (after a DNS rebinding, a hostile page sends its
/// own host in both).
fn origin_allowed(state: &AppState, origin: &str) -> bool {
    state.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
}

/// Why a write must be refused as cross-site, if it must.
fn csrf_refusal(state: &AppState, req: &Request, identity: &Identity) -> Option<&'static str> {
    if !is_write(req.method()) {
        return None;
    }
    match request_origin(req) {
        Some(origin) if origin_allowed(state, &origin) => None,
        Some(_) => Some("cross-site requests may not write: the request's Origin is not this site"),
        None if identity.ambient => {
            Some("writes authenticated by the session cookie must send an Origin header (or use an API token)")
        }
        None => None,
    }
}

/// Middleware: resolves the [`Identity`] of every request into its extensions, refuses
/// cross-site writes, and adds the identity's `Set-Cookie` to the response.
pub async fn resolve<E: Endpoint>(state: Arc<AppState>, ep: E, mut req: Request) -> poem::Result<Response> {
    let identity = match identify(&state, &req).await {
        Ok(identity) => identity,
        Err(resp) => return Ok(*resp),
    };
    if let Some(message) = csrf_refusal(&state, &req, &identity) {
        return Ok(error::response(StatusCode::FORBIDDEN, "csrf_origin", message));
    }
    let set_cookie = identity.set_cookie.clone();
    req.extensions_mut().insert(identity);
    let resp = ep.call(req).await?.into_response();
    Ok(match set_cookie {
        // A handler that sets its own cookie (sign-in, sign-out) wins.
        Some(c) if !resp.headers().contains_key(poem::http::header::SET_COOKIE) => with_cookie(resp, &c),
        _ => resp,
    })
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
