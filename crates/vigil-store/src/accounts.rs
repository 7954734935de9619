//! Broker accounts: who may log in with a password, and their own rules.
//!
//! Accounts change rarely and also from another process (`vigil users` while
//! `vigil serve` runs), so they are written on a short connection of their
//! own rather than through the writer's queue; SQLite's busy timeout orders
//! them with the writer's batches.

use serde::{Deserialize, Serialize};
use sqlx::{ConnectOptions, Connection};
use vigil_core::Micros;

use crate::error::StoreError;
use crate::store::Store;

/// A person or a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// A person (or a program acting for one): every topic by default.
    User,
    /// A device: its own topics by default.
    Device,
}

impl AccountKind {
    fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Device => "device",
        }
    }
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The user name it logs in with.
    pub name: String,
    /// Person or device.
    pub kind: AccountKind,
    /// The password's argon2id hash (PHC string). Never the password.
    #[serde(skip)]
    pub password_hash: String,
    /// Its own publish rules (topic filters, templates allowed), if not the
    /// default for its kind.
    pub publish: Option<Vec<String>>,
    /// Its own subscribe rules, if not the default for its kind.
    pub subscribe: Option<Vec<String>>,
    /// When it was made.
    pub created_at: Micros,
}

type Row = (String, String, String, Option<String>, Option<String>, i64);

fn from_row(row: Row) -> Result<Account, String> {
    let (name, kind, password_hash, publish, subscribe, created_at) = row;
    let kind = match kind.as_str() {
        "user" => AccountKind::User,
        "device" => AccountKind::Device,
        other => return Err(format!("account '{name}' has an unknown kind '{other}'")),
    };
    let rules = |json: Option<String>| -> Result<Option<Vec<String>>, String> {
        json.map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| format!("account '{name}' has damaged rules: {e}"))
    };
    Ok(Account {
        publish: rules(publish)?,
        subscribe: rules(subscribe)?,
        name,
        kind,
        password_hash,
        created_at,
    })
}

impl Store {
    /// Every account, by name.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT name, kind, password_hash, publish, subscribe, created_at
             FROM accounts ORDER BY name",
        )
        .fetch_all(self.read_pool())
        .await
        .map_err(self.inner.query_error("reading accounts"))?;
        rows.into_iter()
            .map(|r| from_row(r).map_err(|e| self.damaged(e)))
            .collect()
    }

    /// The account named `name`, if there is one.
    pub async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT name, kind, password_hash, publish, subscribe, created_at
             FROM accounts WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(self.read_pool())
        .await
        .map_err(self.inner.query_error("reading an account"))?;
        row.map(|r| from_row(r).map_err(|e| self.damaged(e)))
            .transpose()
    }

    /// Adds an account, or replaces the one with its name.
    pub async fn save_account(&self, account: &Account) -> Result<(), StoreError> {
        let json = |rules: &Option<Vec<String>>| {
            rules
                .as_ref()
                .map(|r| serde_json::to_string(r).expect("strings serialise"))
        };
        let mut conn = self.account_connection().await?;
        sqlx::query(
            "INSERT OR REPLACE INTO accounts
             (name, kind, password_hash, publish, subscribe, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&account.name)
        .bind(account.kind.as_str())
        .bind(&account.password_hash)
        .bind(json(&account.publish))
        .bind(json(&account.subscribe))
        .bind(account.created_at)
        .execute(&mut conn)
        .await
        .map_err(self.inner.query_error("saving an account"))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Removes an account; false if there was none by that name.
    pub async fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.account_connection().await?;
        let done = sqlx::query("DELETE FROM accounts WHERE name = ?1")
            .bind(name)
            .execute(&mut conn)
            .await
            .map_err(self.inner.query_error("removing an account"))?;
        let _ = conn.close().await;
        Ok(done.rows_affected() > 0)
    }

    async fn account_connection(&self) -> Result<sqlx::SqliteConnection, StoreError> {
        self.inner
            .write_options
            .connect()
            .await
            .map_err(self.inner.query_error("opening a connection for accounts"))
    }

    fn damaged(&self, why: String) -> StoreError {
        StoreError::Query {
            action: "reading accounts",
            path: self.inner.path.clone(),
            source: sqlx::Error::Protocol(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_store;

    fn account(name: &str, kind: AccountKind) -> Account {
        Account {
            name: name.into(),
            kind,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            publish: None,
            subscribe: Some(vec!["%u/#".into()]),
            created_at: 5,
        }
    }

    #[tokio::test]
    async fn accounts_are_saved_replaced_listed_and_removed() {
        let (_dir, store) = temp_store().await;
        store
            .save_account(&account("bob", AccountKind::User))
            .await
            .unwrap();
        store
            .save_account(&account("ox1", AccountKind::Device))
            .await
            .unwrap();
        let mut again = account("bob", AccountKind::Device);
        again.publish = Some(vec!["a/#".into()]);
        store.save_account(&again).await.unwrap();
        let all = store.accounts().await.unwrap();
        assert_eq!(
            all.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["bob", "ox1"]
        );
        assert_eq!(store.account("bob").await.unwrap(), Some(again));
        assert!(store.remove_account("bob").await.unwrap());
        assert!(!store.remove_account("bob").await.unwrap());
        assert_eq!(store.account("bob").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accounts_are_written_while_the_writer_runs() {
        let (_dir, store) = temp_store().await;
        let writer = store
            .spawn_writer(crate::WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        store
            .save_account(&account("bob", AccountKind::User))
            .await
            .unwrap();
        assert!(store.account("bob").await.unwrap().is_some());
        writer.shutdown().await.unwrap();
    }
}
