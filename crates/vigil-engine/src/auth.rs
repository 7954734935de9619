//! Who may use the embedded broker: the engine's [`Gate`].
//!
//! - A client certificate from the local CA (mutual TLS) is a login of its
//!   own: the client is its certificate's CN, a device, unless the CA has
//!   revoked it.
//! - A user name with a password is checked against the accounts in the
//!   store (argon2id hashes).
//! - A client with neither is anonymous: allowed only from loopback, and only
//!   while `auth.anonymous = "loopback"` (the default), as the local user
//!   with every right. On loopback a user name that names no account is such
//!   a local client too (a label, as many tools send one).
//!
//! Rights come from the account's own rules, or the defaults for its kind:
//! people everything, devices their own topics (`auth.device_publish`,
//! `auth.device_subscribe`, templates with `%c`, `%u`, `%CN`).

use std::path::PathBuf;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use vigil_broker::acl::{expand_all, Names};
use vigil_broker::{Deciding, Denial, Gate, Login, Rights, Verdict};
use vigil_store::Store;
pub use vigil_store::{Account, AccountKind};

/// Whether clients without credentials get in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Only from a loopback address (this machine), with every right.
    Loopback,
    /// Never.
    Off,
}

/// Authentication and default rights (`[auth]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Clients without credentials.
    pub anonymous: Anonymous,
    /// Where a device may publish unless its account says otherwise.
    pub device_publish: Vec<String>,
    /// Where a device may subscribe unless its account says otherwise.
    pub device_subscribe: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let own = vec![
            "%u/#".to_owned(),
            "+/%u/#".to_owned(),
            "%CN/#".to_owned(),
            "+/%CN/#".to_owned(),
        ];
        AuthConfig {
            anonymous: Anonymous::Loopback,
            device_publish: own.clone(),
            device_subscribe: own,
        }
    }
}

/// The argon2id hash (PHC string) of a password, with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with its default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches the PHC string `hash`.
pub fn password_matches(password: &[u8], hash: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// The engine's gate: accounts from the store, certificates from the local CA.
pub struct Gatekeeper {
    store: Store,
    pki_dir: PathBuf,
    config: AuthConfig,
}

impl Gatekeeper {
    /// A gate over these accounts and this CA folder.
    pub fn new(store: Store, pki_dir: PathBuf, config: AuthConfig) -> Gatekeeper {
        Gatekeeper {
            store,
            pki_dir,
            config,
        }
    }

    async fn decide(&self, login: &Login) -> Verdict {
        match self.identify(login).await {
            Ok((identity, account, cn)) => {
                let names = Names {
                    client_id: Some(&login.client_id),
                    user: login.username.as_deref().or(cn.as_deref()),
                    common_name: cn.as_deref(),
                };
                let rights = match account {
                    Some(account) => self.rights_of(&account, &names),
                    None if cn.is_some() => self.device_rights(None, None, &names),
                    None => Rights::All,
                };
                Verdict::Admit { identity, rights }
            }
            Err((refusal, why)) => Verdict::Refuse { refusal, why },
        }
    }

    /// Who the client is: the name it is known by, its account if any, and
    /// its certificate's CN if it showed one.
    #[allow(clippy::type_complexity)]
    async fn identify(
        &self,
        login: &Login,
    ) -> Result<(Option<String>, Option<Account>, Option<String>), (Denial, String)> {
        let refuse = |why: String| Err((Denial::NotAuthorized, why));
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!("cannot check a login: {what}: {e}");
            (Denial::NotAuthorized, format!("{what} failed"))
        };
        if let Some(der) = &login.certificate {
            let cert = vigil_pki::describe_client_certificate(der)
                .map_err(|e| failed("reading the client certificate", &e))?;
            if vigil_pki::is_revoked_in(&self.pki_dir, &cert.serial)
                .map_err(|e| failed("reading the revocations", &e))?
            {
                return refuse(format!(
                    "the certificate of '{}' (serial {}) is revoked",
                    cert.name, cert.serial
                ));
            }
            let account = self
                .store
                .account(&cert.name)
                .await
                .map_err(|e| failed("reading accounts", &e))?;
            return Ok((Some(cert.name.clone()), account, Some(cert.name)));
        }
        let local = login.peer.ip().is_loopback() && self.config.anonymous == Anonymous::Loopback;
        let Some(user) = &login.username else {
            return if local {
                Ok((None, None, None))
            } else if self.config.anonymous == Anonymous::Off {
                refuse("anonymous clients are not allowed (auth.anonymous = \"off\")".into())
            } else {
                refuse("anonymous clients may connect only from this machine (loopback); give a user name and password or a client certificate".into())
            };
        };
        let account = self
            .store
            .account(user)
            .await
            .map_err(|e| failed("reading accounts", &e))?;
        let Some(account) = account else {
            return if local {
                Ok((Some(user.clone()), None, None))
            } else {
                Err((
                    Denial::BadCredentials,
                    format!("there is no account '{user}'"),
                ))
            };
        };
        let password = login.password.clone().unwrap_or_default();
        let hash = account.password_hash.clone();
        // Hashing takes tens of milliseconds of CPU: off the async threads.
        let matches = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
            .await
            .unwrap_or(false);
        if !matches {
            return Err((
                Denial::BadCredentials,
                format!("wrong password for '{user}'"),
            ));
        }
        Ok((Some(user.clone()), Some(account), None))
    }

    fn rights_of(&self, account: &Account, names: &Names) -> Rights {
        match account.kind {
            AccountKind::User if account.publish.is_none() && account.subscribe.is_none() => {
                Rights::All
            }
            AccountKind::User => Rights::Limited {
                publish: expand_all(account.publish.as_deref().unwrap_or(&["#".into()]), names),
                subscribe: expand_all(account.subscribe.as_deref().unwrap_or(&["#".into()]), names),
            },
            AccountKind::Device => self.device_rights(
                account.publish.as_deref(),
                account.subscribe.as_deref(),
                names,
            ),
        }
    }

    fn device_rights(
        &self,
        publish: Option<&[String]>,
        subscribe: Option<&[String]>,
        names: &Names,
    ) -> Rights {
        Rights::Limited {
            publish: expand_all(publish.unwrap_or(&self.config.device_publish), names),
            subscribe: expand_all(subscribe.unwrap_or(&self.config.device_subscribe), names),
        }
    }
}

impl Gate for Gatekeeper {
    fn admit<'a>(&'a self, login: &'a Login) -> Deciding<'a> {
        Box::pin(self.decide(login))
    }
}

/// The accounts of an installation, for `vigil users` (which runs beside a
/// running Vigil as well).
pub struct Accounts {
    store: Store,
}

impl Accounts {
    /// Opens the installation's database (making the data folder, 0700, if
    /// there is none yet).
    pub async fn open(config: &crate::Config) -> Result<Accounts, crate::EngineError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(|e| {
                crate::EngineError::Config(format!(
                    "cannot create the data folder {}: {e}",
                    config.data_dir.display()
                ))
            })?;
        Ok(Accounts {
            store: Store::open(&config.database_path()).await?,
        })
    }

    /// Adds or replaces an account; see [`add_account`].
    pub async fn add(
        &self,
        name: &str,
        kind: AccountKind,
        password: &str,
        publish: Option<Vec<String>>,
        subscribe: Option<Vec<String>>,
    ) -> Result<Account, String> {
        add_account(&self.store, name, kind, password, publish, subscribe).await
    }

    /// Removes an account; false if there was none by that name.
    pub async fn remove(&self, name: &str) -> Result<bool, crate::EngineError> {
        Ok(self.store.remove_account(name).await?)
    }

    /// Every account, by name.
    pub async fn list(&self) -> Result<Vec<Account>, crate::EngineError> {
        Ok(self.store.accounts().await?)
    }

    /// Closes the database.
    pub async fn close(self) {
        self.store.close().await;
    }
}

/// Adds or replaces an account (`vigil users add`): the password is kept
/// only as its argon2id hash; rules are checked as topic filters.
pub async fn add_account(
    store: &Store,
    name: &str,
    kind: AccountKind,
    password: &str,
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
) -> Result<Account, String> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(format!(
            "'{name}' cannot be a user name (empty, too long or with control characters)"
        ));
    }
    if name.contains(['+', '#']) {
        return Err(format!("'{name}' cannot be a user name: + and # are MQTT wildcards, and rules name accounts by %u"));
    }
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    for filter in publish.iter().chain(subscribe.iter()).flatten() {
        let any = Names {
            client_id: Some("c"),
            user: Some("u"),
            common_name: Some("cn"),
        };
        let expanded = vigil_broker::acl::expand(filter, &any);
        if !expanded.is_some_and(|f| vigil_broker::codec::valid_topic_filter(&f)) {
            return Err(format!("'{filter}' is not a topic filter (+ and # only as whole levels, # last; %c, %u, %CN and %% are the only templates)"));
        }
    }
    let hash = {
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| format!("hashing the password failed: {e}"))?
    };
    let account = Account {
        name: name.to_owned(),
        kind,
        password_hash: hash,
        publish,
        subscribe,
        created_at: vigil_core::now_micros(),
    };
    store
        .save_account(&account)
        .await
        .map_err(|e| e.to_string())?;
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vigil_core::Transport;

    fn login(user: Option<&str>, password: &str, peer: &str) -> Login {
        Login {
            client_id: "esp-1".into(),
            username: user.map(str::to_owned),
            password: Some(Bytes::copy_from_slice(password.as_bytes())),
            peer: peer.parse().unwrap(),
            transport: Transport::Tls,
            certificate: None,
        }
    }

    async fn gate(config: AuthConfig) -> (tempfile::TempDir, Gatekeeper) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).await.unwrap();
        add_account(
            &store,
            "ward3/ox1",
            AccountKind::Device,
            "pw-dev",
            None,
            None,
        )
        .await
        .unwrap();
        add_account(&store, "nurse", AccountKind::User, "pw-nurse", None, None)
            .await
            .unwrap();
        add_account(
            &store,
            "bridge",
            AccountKind::User,
            "pw-bridge",
            Some(vec!["zigbee2mqtt/#".into()]),
            None,
        )
        .await
        .unwrap();
        let pki = dir.path().join("pki");
        (dir, Gatekeeper::new(store, pki, config))
    }

    fn refused(v: &Verdict) -> Option<Denial> {
        match v {
            Verdict::Refuse { refusal, .. } => Some(*refusal),
            Verdict::Admit { .. } => None,
        }
    }

    #[tokio::test]
    async fn passwords_anonymity_and_rights_by_kind() {
        let (_dir, gate) = gate(AuthConfig::default()).await;
        let remote = "192.0.2.7:5000";
        let local = "127.0.0.1:5000";
        // Anonymous: this machine only.
        assert_eq!(
            gate.decide(&login(None, "", local)).await,
            Verdict::Admit {
                identity: None,
                rights: Rights::All
            }
        );
        assert_eq!(
            refused(&gate.decide(&login(None, "", remote)).await),
            Some(Denial::NotAuthorized)
        );
        // Passwords.
        assert_eq!(
            refused(&gate.decide(&login(Some("nurse"), "wrong", remote)).await),
            Some(Denial::BadCredentials)
        );
        assert_eq!(
            refused(&gate.decide(&login(Some("nurse"), "wrong", local)).await),
            Some(Denial::BadCredentials),
            "an account's password is checked on loopback too"
        );
        assert_eq!(
            refused(&gate.decide(&login(Some("nobody"), "x", remote)).await),
            Some(Denial::BadCredentials)
        );
        assert_eq!(
            gate.decide(&login(Some("nobody"), "x", local)).await,
            Verdict::Admit {
                identity: Some("nobody".into()),
                rights: Rights::All
            },
            "on loopback an unknown name is a label"
        );
        assert_eq!(
            gate.decide(&login(Some("nurse"), "pw-nurse", remote)).await,
            Verdict::Admit {
                identity: Some("nurse".into()),
                rights: Rights::All
            }
        );
        // A device: its own prefix, by user name.
        let Verdict::Admit { rights, identity } = gate
            .decide(&login(Some("ward3/ox1"), "pw-dev", remote))
            .await
        else {
            panic!("the device is let in");
        };
        assert_eq!(identity.as_deref(), Some("ward3/ox1"));
        assert!(rights.may_publish("ward3/ox1/spo2"));
        assert!(rights.may_publish("tele/ward3/ox1/SENSOR"));
        assert!(!rights.may_publish("ward3/ox2/spo2"));
        assert!(rights.may_subscribe("ward3/ox1/cmd/#"));
        assert!(!rights.may_subscribe("#"));
        // A person with rules of their own.
        let Verdict::Admit { rights, .. } = gate
            .decide(&login(Some("bridge"), "pw-bridge", remote))
            .await
        else {
            panic!("the bridge is let in");
        };
        assert!(rights.may_publish("zigbee2mqtt/lamp"));
        assert!(!rights.may_publish("homie/x"));
        assert!(
            rights.may_subscribe("#"),
            "no subscribe rules of its own: everything"
        );
    }

    #[tokio::test]
    async fn anonymous_can_be_turned_off_even_on_loopback() {
        let (_dir, gate) = gate(AuthConfig {
            anonymous: Anonymous::Off,
            ..AuthConfig::default()
        })
        .await;
        assert_eq!(
            refused(&gate.decide(&login(None, "", "127.0.0.1:1")).await),
            Some(Denial::NotAuthorized)
        );
        assert_eq!(
            refused(
                &gate
                    .decide(&login(Some("nobody"), "x", "127.0.0.1:1"))
                    .await
            ),
            Some(Denial::BadCredentials)
        );
    }

    #[tokio::test]
    async fn accounts_refuse_names_and_rules_that_cannot_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("vigil.db")).await.unwrap();
        for (name, rules) in [
            ("a+b", None),
            ("", None),
            ("ok", Some(vec!["a/#/b".to_owned()])),
            ("ok", Some(vec!["%x/#".to_owned()])),
        ] {
            assert!(
                add_account(&store, name, AccountKind::User, "pw", rules, None)
                    .await
                    .is_err(),
                "{name}"
            );
        }
        assert!(add_account(&store, "ok", AccountKind::User, "", None, None)
            .await
            .is_err());
        let saved = add_account(
            &store,
            "ok",
            AccountKind::Device,
            "pw",
            Some(vec!["%u/#".into()]),
            None,
        )
        .await
        .unwrap();
        assert!(saved.password_hash.starts_with("$argon2id$"));
    }

    #[test]
    fn passwords_are_hashed_with_argon2id_and_salted() {
        let a = hash_password("s3cret");
        let b = hash_password("s3cret");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(password_matches(b"s3cret", &a));
        assert!(!password_matches(b"s3cret ", &a));
        assert!(!password_matches(b"s3cret", "not a hash"));
    }
}
