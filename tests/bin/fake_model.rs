//! `fake-model`: the tests' fake OpenAI-compatible model as a standalone server, to try Cake
//! Agents without a real model provider.
//!
//! `cargo run -p cake-tests --bin fake-model` prints its base URL; use it as
//! `options.baseURL` of an `@ai-sdk/openai-compatible` provider (any API key). It answers
//! "PONG from fake model"; prompts containing `RUNBASH`, `FAIL400` or `FAIL429` exercise a
//! tool call, a provider error and rate limiting.

#[tokio::main]
async fn main() {
    let port = std::env::var("FAKE_MODEL_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    let model = cake_tests::fake_model::FakeModel::start_on(port).await;
    println!("fake model listening: baseURL {}", model.base_url);
    let _ = tokio::signal::ctrl_c().await;
}
