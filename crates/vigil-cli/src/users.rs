//! `vigil users`: the broker's accounts from the command line. A password is
//! read from stdin (typed without echo on a terminal, or piped), never from a
//! flag (flags show in `ps`) and never printed.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use vigil_engine::auth::{Account, AccountKind, Accounts};
use vigil_engine::Config;

#[derive(Args)]
pub struct UsersArgs {
    /// Where Vigil keeps its data [default: the platform's data folder]
    #[arg(long, env = "VIGIL_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (for its data_dir)
    #[arg(long, env = "VIGIL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add an account, or replace one (its password read from stdin).
    Add {
        /// The user name it logs in with.
        name: String,
        /// A device: by default it may publish and subscribe only under its
        /// own name (NAME/# and +/NAME/#), not everywhere like a person.
        #[arg(long)]
        device: bool,
        /// Where it may publish (a topic filter; %c, %u and %CN are filled
        /// in). Repeat for more. Default: by kind.
        #[arg(long = "publish", value_name = "FILTER")]
        publish: Vec<String>,
        /// Where it may subscribe (as --publish).
        #[arg(long = "subscribe", value_name = "FILTER")]
        subscribe: Vec<String>,
    },
    /// Remove an account (clients already connected stay until they leave).
    Remove {
        /// The user name.
        name: String,
    },
    /// List the accounts (never their passwords).
    List,
}

pub async fn run(args: UsersArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let accounts = Accounts::open(&config).await?;
    let result = command(&accounts, args.command).await;
    accounts.close().await;
    result
}

async fn command(accounts: &Accounts, command: UsersCommand) -> Result<()> {
    match command {
        UsersCommand::Add {
            name,
            device,
            publish,
            subscribe,
        } => {
            let password = read_password(&name)?;
            let kind = if device {
                AccountKind::Device
            } else {
                AccountKind::User
            };
            let rules = |r: Vec<String>| (!r.is_empty()).then_some(r);
            let account = accounts
                .add(&name, kind, &password, rules(publish), rules(subscribe))
                .await
                .map_err(anyhow::Error::msg)?;
            println!("saved {}", line(&account));
        }
        UsersCommand::Remove { name } => {
            if !accounts.remove(&name).await? {
                bail!("there is no account '{name}'");
            }
            println!("removed {name}");
        }
        UsersCommand::List => {
            for account in accounts.list().await? {
                println!("{}", line(&account));
            }
        }
    }
    Ok(())
}

fn line(a: &Account) -> String {
    let kind = match a.kind {
        AccountKind::User => "user",
        AccountKind::Device => "device",
    };
    let rules = |r: &Option<Vec<String>>| match r {
        Some(r) => r.join(" "),
        None => "(default)".to_owned(),
    };
    format!(
        "{}  {kind}  publish: {}  subscribe: {}",
        a.name,
        rules(&a.publish),
        rules(&a.subscribe)
    )
}

/// The first line of stdin; on a terminal, asked for and typed without echo.
fn read_password(name: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let _echo_off = if terminal {
        eprint!("password for {name}: ");
        let _ = std::io::stderr().flush();
        EchoOff::new()
    } else {
        None
    };
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    if terminal {
        eprintln!();
    }
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password: give it on stdin (echo 'the password' | vigil users add {name})");
    }
    Ok(password)
}

/// Terminal echo off until dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr read and write the struct given, on
        // stdin's descriptor; the old settings are put back on drop.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let old = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(EchoOff(old))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}
