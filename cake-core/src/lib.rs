//! The Cake Agents domain: who the users are, what a session is and which states it moves
//! through, who may do what to it, and the application services that orchestrate the ports.
//!
//! This crate does no I/O and has no async runtime: every effect (PostgreSQL, the session
//! runtime, the OpenCode client, the clock, randomness, background tasks) goes through a
//! port trait in [`ports`], implemented in `cake-adapters` or by an embedding application.
//!
//! # Layout
//!
//! - [`cache`]: a small TTL cache for hot reads.
//! - [`error`]: [`CoreError`], the one error type of the domain.
//! - [`user`]: users, roles, [`user::Email`] and the [`user::Actor`] who makes a request.
//! - [`session`]: sessions, their [`session::Status`] state machine, [`session::Title`].
//! - [`policy`]: the permission table of DESIGN.md as one pure function, [`policy::decide`].
//! - [`credential`]: linked credentials (GitHub tokens), hosts, the broker's grants and the
//!   audit log's records.
//! - [`provider`]: admin-managed model providers in OpenCode's format, secret masking and the
//!   per-session OpenCode config built from them.
//! - [`settings`]: the visibility new sessions start with, per surface, for the organisation
//!   and each user.
//! - [`events`]: the frames that flow from a data plane to the observers of a session.
//! - [`ports`]: the traits adapters implement.
//! - [`services`]: the use cases ([`services::SessionService`], [`services::AuthService`],
//!   [`services::ProviderService`]).

pub mod cache;
pub mod credential;
pub mod error;
pub mod events;
pub mod policy;
pub mod ports;
pub mod provider;
pub mod ratelimit;
pub mod services;
pub mod session;
pub mod settings;
pub mod user;

pub use error::CoreError;

/// The result type of every fallible domain operation.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
