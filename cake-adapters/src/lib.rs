//! Adapters: the port implementations of `cake-core`, one module per technology.
//!
//! # Layout
//!
//! - [`postgres`]: repositories on PostgreSQL (sqlx, migrations embedded from `migrations/`)
//!   and [`postgres::embedded::EmbeddedPostgres`], the cluster `cake serve` runs itself when no
//!   `DATABASE_URL` is given.
//! - [`kubernetes`]: [`kubernetes::KubeRuntime`], the session runtime that runs one pod per
//!   session in a Kubernetes cluster, with its pod watcher and Lease-holding reconciler.
//! - [`local`]: [`local::LocalRuntime`], the session runtime that runs `opencode serve` as a
//!   child process per session on one machine.
//! - [`opencode`]: [`opencode::OpenCodeClient`], the HTTP + SSE client of a data plane.
//! - [`relay`]: [`relay::BroadcastHub`], the per-session fan-out of frames to observers.
//! - [`crypto`]: AES-256-GCM secrets at rest, argon2id passwords, random tokens.
//! - [`header_auth`]: [`header_auth::HeaderAuth`], identity from a trusted proxy's headers
//!   (seed 002), with optional trusted-proxy networks and JWKS verification.
//! - [`oidc`]: [`oidc::OidcClient`], OpenID Connect sign-in (code flow, PKCE, state, nonce).
//! - [`jwks`]: [`jwks::JwksVerifier`], JWT signatures checked against a remote key set.
//! - [`system`]: the clock, ids and the tokio spawner.

pub mod crypto;
pub mod header_auth;
pub mod jwks;
pub mod kubernetes;
pub mod local;
pub mod oidc;
pub mod opencode;
pub mod postgres;
pub mod relay;
pub mod system;
