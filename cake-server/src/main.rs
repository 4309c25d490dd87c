//! `cake`: the Cake Agents control plane binary.

use clap::{Parser, Subcommand};

use cake_server::config::Config;
use cake_server::startup::Application;

/// Cake Agents: every session an AI coding agent (OpenCode) in its own runtime.
#[derive(Parser)]
#[command(name = "cake", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (embedded PostgreSQL and local runtime unless configured otherwise).
    Serve(Box<Config>),
    /// Print the OpenAPI spec (the committed openapi.json is this output).
    Openapi,
    /// Git's credential helper in a session's runtime: answers `get` with the credential the
    /// session's owner granted for the host, asked from the control plane with the session's
    /// broker token (CAKE_BROKER_URL, CAKE_BROKER_TOKEN). Configure it as
    /// `credential.helper = /usr/local/bin/cake git-credential`.
    GitCredential {
        /// What git asks: get, store or erase (store and erase change nothing).
        action: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            let state = cake_server::api::spec_for_docs();
            print!("{state}");
            std::process::ExitCode::SUCCESS
        }
        Command::Serve(config) => serve(*config).await,
        Command::GitCredential { action } => cake_server::git_credential::run(&action).await,
    }
}

async fn serve(config: Config) -> std::process::ExitCode {
    cake_server::telemetry::init(&config.log, config.log_json);
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("cake: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %app.addr(), public_url = app.public_url(), "Cake Agents control plane is listening");
    println!("Cake Agents is running at {0} — API docs at {0}/api/docs", app.public_url());
    wait_for_signal().await;
    tracing::info!("shutting down");
    app.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
