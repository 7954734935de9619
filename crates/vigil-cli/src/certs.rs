//! `vigil certs`: the local CA from the command line (init, issue, list,
//! revoke, export, import). Keys are never printed; an imported CA key's
//! passphrase comes from `VIGIL_CA_PASSPHRASE`, never from a flag (flags show
//! in `ps`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use vigil_engine::certs::{self, CertInfo, Pki};
use vigil_engine::Config;

#[derive(Args)]
pub struct CertsArgs {
    /// Where Vigil keeps its data (the CA is in <data-dir>/pki) [default: the platform's data folder]
    #[arg(long, env = "VIGIL_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (for its data_dir)
    #[arg(long, env = "VIGIL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make the local CA if there is none, and show it.
    Init,
    /// Issue (or re-issue) a client certificate for a device.
    Issue {
        /// The device id (becomes the certificate's CN).
        device: String,
    },
    /// List the CA, the server certificate and every device certificate.
    List,
    /// Revoke a device's certificate: it is refused at its next connection.
    Revoke {
        /// The device id.
        device: String,
    },
    /// Write a device's bundle (ca.pem, <device>.pem, <device>.key, README.txt).
    Export {
        /// The device id.
        device: String,
        /// The folder to write (created with mode 0700).
        #[arg(long)]
        out: PathBuf,
        /// The host name devices use to reach Vigil [default: this machine's name]
        #[arg(long)]
        host: Option<String>,
        /// The MQTT over TLS port devices use.
        #[arg(long, default_value_t = 8883)]
        port: u16,
    },
    /// Use an existing CA instead of Vigil's own (PEM; an encrypted key's
    /// passphrase in VIGIL_CA_PASSPHRASE).
    Import {
        /// The CA certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (PEM: PKCS#8, encrypted PKCS#8, or SEC1 EC).
        #[arg(long)]
        key: PathBuf,
    },
}

pub fn run(args: CertsArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let dir = certs::pki_dir(&config);
    match args.command {
        CertsCommand::Import { cert, key } => {
            let cert_pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let passphrase = std::env::var("VIGIL_CA_PASSPHRASE").ok();
            let pki = Pki::import_ca(&dir, &cert_pem, &key_pem, passphrase.as_deref())?;
            println!("imported; devices and the server now get certificates from it:");
            print(&pki.ca_info()?);
        }
        command => {
            let pki = certs::open(&config)?;
            match command {
                CertsCommand::Init => {
                    print(&pki.ca_info()?);
                    println!("  in {}", dir.display());
                }
                CertsCommand::Issue { device } => print(&pki.issue_device(&device)?.info),
                CertsCommand::List => {
                    for c in pki.list()? {
                        print(&c);
                    }
                }
                CertsCommand::Revoke { device } => print(&pki.revoke(&device)?),
                CertsCommand::Export {
                    device,
                    out,
                    host,
                    port,
                } => {
                    let host = host.unwrap_or_else(certs::host_name);
                    for path in pki.export(&device, &out, &host, port)? {
                        println!("{}", path.display());
                    }
                }
                CertsCommand::Import { .. } => unreachable!("handled above"),
            }
        }
    }
    Ok(())
}

fn print(c: &CertInfo) {
    let until = time_of(c.not_after);
    let kind = match c.kind {
        certs::Kind::Ca => "CA",
        certs::Kind::Server => "server",
        certs::Kind::Device => "device",
    };
    let state = if c.revoked { "  REVOKED" } else { "" };
    println!(
        "{kind:<6}  {}  until {until}  serial {}{state}",
        c.name, c.serial
    );
    println!("        SHA-256 {}", c.sha256);
    if !c.names.is_empty() {
        println!("        for {}", c.names.join(", "));
    }
}

/// A date as YYYY-MM-DD (UTC).
fn time_of(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
