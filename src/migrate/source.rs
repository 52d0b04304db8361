//! The source of a migration: ILP Kit's PostgreSQL database, where each stateful ledger's plugin store is one
//! table `"plugin_store_<ledgerPrefix>s"` with columns `key`, `value`, `"createdAt"`, `"updatedAt"` (Sequelize 3,
//! docs/ilp-kit.md §5).
//!
//! All tables are read inside one `REPEATABLE READ, READ ONLY` transaction, so the ledgers are read as of one
//! moment even if ILP Kit is still writing (it should be stopped first), and nothing is ever written to the
//! database.

use std::fmt;
use std::time::Duration;

use futures::{pin_mut, TryStreamExt};
use tokio_postgres::{Client, Config, NoTls};

use super::progress::Progress;

/// How long connecting to the database may take before the migration gives up: a wrong host otherwise hangs
/// for the operating system's TCP timeout (minutes).
pub const PG_CONNECT_TIMEOUT_SECS: u64 = 10;

/// Why the database could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The URL does not parse as a PostgreSQL connection string.
    #[error("database URL is not a PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// Connecting failed (server down, wrong host, password refused, TLS required).
    #[error("cannot connect to the database at {at}")]
    Connect {
        /// Where, without the password.
        at: DatabaseName,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Connecting took longer than [`PG_CONNECT_TIMEOUT_SECS`].
    #[error("cannot connect to the database at {0}: no answer within {PG_CONNECT_TIMEOUT_SECS} s")]
    Timeout(DatabaseName),
    /// A query failed.
    #[error("reading table {table:?}")]
    Query {
        /// The table.
        table: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A database's address without its password, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseName {
    /// `user@host:port/dbname`, parts the URL leaves out omitted.
    pub text: String,
}

impl fmt::Display for DatabaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl DatabaseName {
    fn of(config: &Config) -> DatabaseName {
        let host = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = config
            .get_ports()
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut text = String::new();
        if let Some(user) = config.get_user() {
            text.push_str(user);
            text.push('@');
        }
        text.push_str(if host.is_empty() { "localhost" } else { &host });
        if !port.is_empty() {
            text.push(':');
            text.push_str(&port);
        }
        if let Some(db) = config.get_dbname() {
            text.push('/');
            text.push_str(db);
        }
        DatabaseName { text }
    }
}

/// The name of ledger `prefix`'s plugin store table, as Sequelize 3 pluralises the model name.
pub fn table_name(prefix: &str) -> String {
    format!("plugin_store_{prefix}s")
}

/// The rows of one plugin store table.
#[derive(Debug, Clone, Default)]
pub struct TableRows {
    /// `(key, value)` rows, in key order.
    pub rows: Vec<(String, String)>,
    /// Keys of rows whose `value` is NULL (the plugin never writes one; they cannot be imported).
    pub null_values: Vec<String>,
}

impl TableRows {
    /// Rows read, NULL values included.
    pub fn len(&self) -> usize {
        self.rows.len() + self.null_values.len()
    }

    /// Whether the table had no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection to ILP Kit's database, holding one read-only snapshot.
pub struct PgSource {
    client: Client,
    name: DatabaseName,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for PgSource {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PgSource {
    /// Connects to `url` and starts the read-only snapshot. The password never appears in errors.
    pub async fn connect(url: &str) -> Result<PgSource, SourceError> {
        let mut config: Config = url.parse().map_err(SourceError::Url)?;
        config.connect_timeout(Duration::from_secs(PG_CONNECT_TIMEOUT_SECS));
        config.application_name("ilp-bridge migrate-ilp-kit");
        let name = DatabaseName::of(&config);
        let connecting = config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(
            // The driver's own timeout covers each address; this one bounds the whole attempt.
            Duration::from_secs(PG_CONNECT_TIMEOUT_SECS + 1),
            connecting,
        )
        .await
        .map_err(|_| SourceError::Timeout(name.clone()))?
        .map_err(|source| SourceError::Connect {
            at: name.clone(),
            source,
        })?;
        let connection = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "database connection closed");
            }
        });
        let source = PgSource {
            client,
            name,
            connection,
        };
        source
            .client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|source| SourceError::Query {
                table: "(start of read-only snapshot)".to_owned(),
                source,
            })?;
        // The transaction is never committed: it ends when the connection closes.
        Ok(source)
    }

    /// Where this source reads from (no password).
    pub fn name(&self) -> &DatabaseName {
        &self.name
    }

    /// Reads the plugin store table of ledger `prefix`; `None` when the table does not exist. `progress` is told
    /// the row count first and then each row read.
    pub async fn read_table(
        &self,
        prefix: &str,
        progress: &dyn Progress,
    ) -> Result<Option<TableRows>, SourceError> {
        let table = table_name(prefix);
        let query_error = |source| SourceError::Query {
            table: table.clone(),
            source,
        };
        let exists = self
            .client
            .query_opt(
                "SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .await
            .map_err(query_error)?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let quoted = quote_identifier(&table);
        let count: i64 = self
            .client
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await
            .map_err(query_error)?
            .get(0);
        progress.start(&table, u64::try_from(count).unwrap_or(0));
        // Streamed, so a large table is not held twice (the driver's rows and ours).
        let stream = self
            .client
            .query_raw(
                &format!("SELECT key::text, value::text FROM {quoted} ORDER BY key"),
                std::iter::empty::<&str>(),
            )
            .await
            .map_err(query_error)?;
        pin_mut!(stream);
        let mut rows = TableRows::default();
        while let Some(row) = stream.try_next().await.map_err(query_error)? {
            let key: Option<String> = row.try_get(0).map_err(query_error)?;
            let value: Option<String> = row.try_get(1).map_err(query_error)?;
            // `key` is the primary key, never NULL; a NULL value is kept aside to be reported.
            let key = key.unwrap_or_default();
            match value {
                Some(value) => rows.rows.push((key, value)),
                None => rows.null_values.push(key),
            }
            progress.advance(1);
        }
        progress.finish();
        Ok(Some(rows))
    }
}

/// `name` as a quoted SQL identifier (`"` doubled).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_sequelize_plurals_quoted() {
        assert_eq!(
            table_name("g.eur.mytrustline."),
            "plugin_store_g.eur.mytrustline.s"
        );
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn database_names_never_show_the_password() -> Result<(), tokio_postgres::Error> {
        let config: Config = "postgres://kit:s3cret@db.example:5433/ilpkit".parse()?;
        let name = DatabaseName::of(&config).to_string();
        assert_eq!(name, "kit@db.example:5433/ilpkit");
        assert!(!name.contains("s3cret"));
        Ok(())
    }
}
