//! Port traits: everything the domain needs from the outside world, one small object-safe
//! trait per concern. Adapters live in `cake-adapters`; embedding applications may bring their
//! own (see `examples/custom_runtime.rs`).
//!
//! With the `testing` feature (and in this crate's own tests) every trait has a mockall mock,
//! `MockSessionRepository` and so on, next to it.

mod auth_repository;
mod credential_store;
mod crypto;
mod data_plane;
mod event_hub;
mod identity;
mod provider_repository;
mod session_repository;
mod session_runtime;
mod settings_repository;
mod system;
mod user_repository;

pub use auth_repository::*;
pub use credential_store::*;
pub use crypto::*;
pub use data_plane::*;
pub use event_hub::*;
pub use identity::*;
pub use provider_repository::*;
pub use session_repository::*;
pub use session_runtime::*;
pub use settings_repository::*;
pub use system::*;
pub use user_repository::*;
