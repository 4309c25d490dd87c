//! Test support for the integration tests in `api/`: a fake OpenAI-compatible model server,
//! a fake Kubernetes API server (with a fake kubelet that runs the real OpenCode),
//! a shared real PostgreSQL cluster with a fresh database per test, and `spawn_app()` that
//! starts the real control plane on port 0 with the real OpenCode.

pub mod app;
pub mod fake_kube;
pub mod fake_model;
pub mod oidc;
pub mod pg;
pub mod sse;
