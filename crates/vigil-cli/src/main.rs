//! `vigil`: the headless shell.
//!
//! It parses flags and calls `vigil-engine`; it holds no business logic.
//! - `vigil serve`: broker, engine, store and the HTTP API with its live event
//!   stream (`vigil-api`), the UI as its fallback ([`ui`]).
//! - `vigil bench ingest`: a load generator against a fresh `vigil serve`
//!   ([`bench`]); `vigil bench coap`: observed CoAP resources ([`bench_coap`]).
//! - `vigil certs`: the local CA ([`certs`]).
//! - `vigil users`: the broker's accounts ([`users`]).

mod bench;
mod bench_coap;
mod certs;
mod serve;
mod ui;
mod users;

use clap::{Parser, Subcommand};

/// Vigil: watch devices that report over MQTT and CoAP.
#[derive(Parser)]
#[command(name = "vigil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker, the engine, the store and the HTTP API (headless).
    Serve(serve::ServeArgs),
    /// Measure Vigil under load.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The local certificate authority: init, issue, list, revoke, export, import.
    Certs(certs::CertsArgs),
    /// The broker's accounts: add, remove, list.
    Users(users::UsersArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Publish from many devices into a fresh `vigil serve` and measure ingest.
    Ingest(bench::IngestArgs),
    /// Observed CoAP resources notifying into a fresh `vigil serve`: loss and CPU.
    Coap(bench_coap::CoapArgs),
}

fn main() -> std::process::ExitCode {
    vigil_engine::process::prepare();
    let cli = Cli::parse();
    if let Command::Certs(args) = cli.command {
        return match certs::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Bench(BenchCommand::Ingest(args)) => bench::run_ingest(args).await,
            Command::Bench(BenchCommand::Coap(args)) => bench_coap::run(args).await,
            Command::Users(args) => users::run(args).await,
            Command::Certs(_) => unreachable!("run without the runtime above"),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
