//! kith: a self-hosted, Matrix-compatible homeserver with first-class contacts.
//!
//! One process holds what the original design split into six services: the gateway
//! (`gateway`), and auth, session, profile, contacts and messaging (`services`). They share
//! one RocksDB database (crate `kith-storage`) and an event log (`events`).

mod admin;
mod api;
mod config;
mod events;
mod gateway;
mod metrics;
mod services;
mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::services::Services;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file (every option also has a KITH_* environment variable).
    #[arg(long, env = "KITH_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Administer users and registration tokens, whether or not the server runs.
    #[command(subcommand)]
    Admin(admin::cli::AdminCommand),
    /// Check the configuration and print what it resolves to (the file, KITH_* variables
    /// and defaults), secrets masked.
    CheckConfig,
}

/// glibc keeps freed memory where it can reuse it, which for kith's pattern means keeping
/// it: each thread that allocates gets its own arena (up to 8 per core) and the blocking
/// pool's threads come and go; and after a large block (argon2's 19 MiB per password hash)
/// is freed, glibc raises its mmap threshold so the next ones come from an arena and stay
/// resident. Two arenas and a fixed 1 MiB threshold (large blocks mapped, and unmapped
/// when freed) keep the resident size close to what is in use.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first in main, before any other thread exists; mallopt only sets
    // tunables.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Every file and directory kith creates is its owner's alone (0600, 0700): the database
/// holds the access-token secret and the signing key.
fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; called first in main.
    unsafe {
        libc::umask(0o077);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    private_files();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kith: {e}");
            return ExitCode::FAILURE;
        }
    };
    // ruma's auth checks log every event they pass at INFO; only their warnings are news.
    let mut wanted = config.log.filter.clone();
    if !wanted.contains("ruma_state_res") {
        wanted.push_str(",ruma_state_res=warn");
    }
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&wanted));
    let filter = filter.unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        config::LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            logs.with_ansi(ansi).init();
        }
        // One object per line, with the request's span (its ID) in `span` and `spans`.
        config::LogFormat::Json => logs.json().init(),
    }

    if let Some(Command::CheckConfig) = cli.command {
        let source = cli.config.as_deref().map_or_else(
            || "defaults and KITH_* variables".to_owned(),
            |file| file.display().to_string(),
        );
        return match config.resolved_masked() {
            Ok(text) => {
                println!(
                    "# kith {}: the configuration is valid ({source})\n",
                    env!("CARGO_PKG_VERSION")
                );
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kith: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kith: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
        Command::Admin(command) => runtime.block_on(admin::cli::run(config, command)),
        Command::CheckConfig => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kith: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let started = Instant::now();
    let address = config.listen.client;
    let services = Services::open(config)?;
    services.bootstrap_registration_token()?;
    // The queue first: subscribers may queue for other servers as they catch up.
    services.start_federation();
    services.start_auth();
    services.start_subscribers();
    services.start_timers()?;
    services.start_pushers();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let router = api::router(services.clone());
    // The federation listener serves the same routes over TLS; X-Matrix, not the port,
    // is what makes a request a server's.
    let federation = match services.config.federation.enabled {
        true => Some(federation_listener(&services.config, router.clone()).await?),
        false => None,
    };
    tracing::info!(
        server_name = %services.config.server_name,
        client_api = %local,
        federation_api = %federation.as_ref().map_or("off".to_owned(), |(addr, _)| addr.to_string()),
        startup_ms = started.elapsed().as_millis() as u64,
        "kith is listening"
    );
    if let Some(address) = services.config.metrics.listen {
        metrics_listener(address, services.clone()).await?;
    }
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    if let Some((_, handle)) = federation {
        handle.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    }
    services.storage.flush().map_err(|e| e.to_string())?;
    if let Some(counts) = services.storage.read_counts() {
        tracing::info!(
            memtable_hits = counts.memtable_hits,
            memtable_misses = counts.memtable_misses,
            block_cache_hits = counts.block_cache_hits,
            block_cache_misses = counts.block_cache_misses,
            "where reads found their data"
        );
    }
    tracing::info!("kith stopped");
    Ok(())
}

/// Binds the metrics listener (`[metrics] listen`) and serves `GET /metrics` on it in the
/// background.
async fn metrics_listener(address: SocketAddr, services: services::AppState) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for metrics: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(metrics = %local, "serving Prometheus metrics");
    let router = api::metrics_router(services);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("metrics listener failed: {e}");
        }
    });
    Ok(())
}

/// Binds the TLS federation listener and serves `router` on it in the background.
async fn federation_listener(
    config: &Config,
    router: axum::Router,
) -> Result<(SocketAddr, axum_server::Handle<SocketAddr>), String> {
    let address = config.listen.federation;
    let tls = gateway::tls::rustls_config(config).await?;
    let listener = std::net::TcpListener::bind(address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("cannot listen on {address} for federation: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls)
        .map_err(|e| format!("cannot listen on {address} for federation: {e}"))?
        .handle(handle.clone());
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = server.serve(app).await {
            tracing::error!("federation listener failed: {e}");
        }
    });
    Ok((local, handle))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or_default(),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or_default();
    tracing::info!("shutting down");
}
