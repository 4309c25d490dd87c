//! Integration tests: the real control plane on port 0 against a real PostgreSQL, the real
//! OpenCode and a fake OpenAI-compatible model. One binary, a module per area.

mod auth;
mod broker;
mod browser_sessions;
mod header_auth;
mod kubernetes;
mod kubernetes_lifecycle;
mod lifecycle;
mod oidc;
mod replicas;
mod restart;
mod settings;
mod validation;
