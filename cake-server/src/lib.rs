//! The Cake Agents control plane: configuration, wiring, the HTTP API and the relay to each
//! session's data plane. It holds no business rules: every decision is a `cake-core` service
//! call, and every effect an adapter of `cake-adapters`.
//!
//! # Layout
//!
//! - [`config`]: the one typed [`config::Config`] (`cake serve --help`).
//! - [`startup`]: [`startup::Application`] builds everything, binds and shuts down in order.
//! - [`api`]: the OpenAPI operations, one module per tag, and the spec.
//! - [`passthrough`]: the authorized raw OpenCode pass-through.
//! - [`identity`]: cookie and API-token identity, resolved into every request.
//! - [`error`]: the one error envelope and the domain-error → status mapping.
//! - [`git_credential`]: `cake git-credential`, git's credential helper in a session's runtime.
//! - [`metrics`], [`state`], [`telemetry`].
//!
//! # Embedding
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = cake_server::config::Config::for_data_dir("./.cake".into());
//! let app = cake_server::startup::Application::build(config).await?;
//! println!("listening on {}", app.addr());
//! app.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod config;
pub mod error;
pub mod git_credential;
pub mod identity;
pub mod metrics;
pub mod passthrough;
pub mod startup;
pub mod state;
pub mod telemetry;
