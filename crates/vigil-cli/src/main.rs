//! `vigil`: the headless shell.
//!
//! It parses flags and calls `vigil-engine`; it holds no business logic.
//! - `vigil serve`: broker, engine, store and the HTTP API with its live event
//!   stream (`vigil-api`), the UI as its fallback ([`ui`]).
//! - `vigil bench ingest`: a load generator against a fresh `vigil serve`
//!   ([`bench`]).
//! - `vigil certs`: the local CA ([`certs`]).
//! - `vigil users`: the broker's accounts ([`users`]).

mod bench;
mod certs;
mod serve;
mod ui;
mod users;

use clap::{Parser, Subcommand};

/// Vigil: watch devices that report over MQTT.
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
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    raise_open_file_limit();
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

/// glibc gives each thread that allocates its own arena (up to 8 per core), and
/// memory freed into one arena is not reused by another: under load that alone
/// added ~48 MiB to `vigil serve`'s peak RSS (178 → 130 MiB in `vigil bench
/// ingest`, same throughput; see BENCHMARKS.md). Two arenas are enough for
/// two busy threads (the tokio workers and the SQLite writer).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft limit of open files to the hard one: every MQTT client
/// holds three descriptors (its socket, and both ends of the front door's
/// loopback connection to the router), and the usual soft limit (1024) would
/// refuse a few hundred devices. The hard limit still applies; past it,
/// connections are refused with "Too many open files" in the log.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
