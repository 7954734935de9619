//! Who gets in: the front door asks a [`Gate`] about every CONNECT, after the
//! transport (and TLS, with its client certificate) is settled and before the
//! router hears of the client.
//!
//! The broker knows no users: the engine's gate checks passwords in the store
//! and certificates against the local CA's revocations. The broker itself
//! limits failed logins per source address (see [`FailedLogins`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vigil_core::Transport;

use crate::acl::Rights;

/// A client asking to connect.
#[derive(Clone)]
pub struct Login {
    /// The client id it gave (or was assigned).
    pub client_id: String,
    /// The user name it gave.
    pub username: Option<String>,
    /// The password it gave. Never logged.
    pub password: Option<Bytes>,
    /// Where it connects from.
    pub peer: SocketAddr,
    /// How it connects.
    pub transport: Transport,
    /// The DER of the certificate it presented (mutual TLS), already verified
    /// against the local CA by TLS.
    pub certificate: Option<Bytes>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("peer", &self.peer)
            .field("transport", &self.transport)
            .field("certificate", &self.certificate.is_some())
            .finish()
    }
}

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it in as `identity` (the user name or certificate name it is
    /// known by, if any), with these rights.
    Admit {
        /// The name it is known by.
        identity: Option<String>,
        /// What it may do.
        rights: Rights,
    },
    /// Refuse it; `why` is logged (never with a password).
    Refuse {
        /// The CONNACK answer.
        refusal: Denial,
        /// For the log and the connection event.
        why: String,
    },
}

/// How a login is refused, as the client sees it in its CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Wrong user name or password (3.1.1: 4; 5: 0x86).
    BadCredentials,
    /// Not allowed in (3.1.1: 5; 5: 0x87).
    NotAuthorized,
    /// Too many failed logins from its address (3.1.1: 5; 5: 0x9F).
    TooManyAttempts,
}

/// The future a gate returns.
pub type Deciding<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// Decides who connects and with which rights.
pub trait Gate: Send + Sync + 'static {
    /// Decides on one login. It may take time (a password hash costs tens of
    /// milliseconds): other connections go on meanwhile.
    fn admit<'a>(&'a self, login: &'a Login) -> Deciding<'a>;
}

/// The gate of a broker without accounts: anonymous clients on loopback get
/// every right, everyone else is refused.
pub struct LoopbackOnly;

impl Gate for LoopbackOnly {
    fn admit<'a>(&'a self, login: &'a Login) -> Deciding<'a> {
        Box::pin(async move {
            if login.peer.ip().is_loopback() && login.username.is_none() {
                Verdict::Admit {
                    identity: None,
                    rights: Rights::All,
                }
            } else {
                Verdict::Refuse {
                    refusal: Denial::NotAuthorized,
                    why: "only anonymous clients on loopback may connect (no accounts)".into(),
                }
            }
        })
    }
}

/// Failed logins per source address in a sliding minute: past the limit,
/// an address is refused without asking the gate until its minute is over.
pub(crate) struct FailedLogins {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedLogins {
    pub(crate) fn new(limit: u32, window: Duration) -> FailedLogins {
        FailedLogins {
            limit,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` has used up its failed logins.
    pub(crate) fn blocked(&self, ip: IpAddr) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < self.window && *n >= self.limit)
    }

    /// Counts a failed login; returns how many `ip` has in its window.
    pub(crate) fn failed(&self, ip: IpAddr) -> u32 {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            let window = self.window;
            seen.retain(|_, (since, _)| since.elapsed() < window);
        }
        let entry = seen.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_limit_until_the_window_passes() {
        let f = FailedLogins::new(3, Duration::from_millis(200));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(f.failed(a), 1);
        assert_eq!(f.failed(a), 2);
        assert!(!f.blocked(a));
        assert_eq!(f.failed(a), 3);
        assert!(f.blocked(a));
        assert!(!f.blocked(b));
        std::thread::sleep(Duration::from_millis(250));
        assert!(!f.blocked(a));
        assert_eq!(f.failed(a), 1);
    }

    #[test]
    fn a_login_never_shows_its_password() {
        let login = Login {
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"hunter2")),
            peer: "127.0.0.1:1".parse().unwrap(),
            transport: Transport::Tcp,
            certificate: None,
        };
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
