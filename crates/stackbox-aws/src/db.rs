//! The app databases and users inside the RDS instance, over the MySQL protocol.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use crate::error::{AwsError, InfraStep};

/// A boxed future, so that [`DatabaseBootstrap`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where and as whom to connect: the instance's endpoint and its master login.
#[derive(Clone)]
pub struct DbServer {
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    admin_password: String,
}

impl DbServer {
    pub fn new(
        host: impl Into<String>,
        port: u16,
        admin_user: impl Into<String>,
        admin_password: impl Into<String>,
    ) -> DbServer {
        DbServer {
            host: host.into(),
            port,
            admin_user: admin_user.into(),
            admin_password: admin_password.into(),
        }
    }

    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }
}

impl fmt::Debug for DbServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_user", &self.admin_user)
            .finish_non_exhaustive()
    }
}

/// One app's database and user (same name), with the user's password.
#[derive(Clone)]
pub struct DbGrant {
    pub name: String,
    password: String,
}

impl DbGrant {
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> DbGrant {
        DbGrant {
            name: name.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for DbGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbGrant")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Makes and removes app databases and users on a MySQL-compatible server. Every operation is
/// idempotent. The phase calls it with the RDS endpoint; tests give one that points elsewhere
/// (RDS in moto has no server behind it).
pub trait DatabaseBootstrap: Send + Sync {
    /// Which of `names` exist as databases.
    fn existing<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>>;

    /// Creates each database and user if missing, sets the user's password and grants it its
    /// own database only.
    fn ensure<'a>(
        &'a self,
        server: &'a DbServer,
        grants: &'a [DbGrant],
    ) -> BoxFuture<'a, Result<(), AwsError>>;

    /// Drops these databases and their users, if they exist.
    fn remove<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<(), AwsError>>;
}

/// A database or user name StackBox makes: `[a-z0-9_]`, at most 32 (MySQL 8's user limit).
/// Checked again here because the names go into SQL as identifiers.
pub fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A MySQL string literal: backslashes and quotes doubled (the passwords StackBox makes are
/// alphanumeric; this is for any other).
pub fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The statements that make one app's database and user (idempotent).
pub fn ensure_statements(grant: &DbGrant) -> Result<Vec<String>, AwsError> {
    let name = &grant.name;
    check(name)?;
    let password = sql_string(&grant.password);
    Ok(vec![
        format!(
            "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ),
        format!("CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY {password}"),
        format!("ALTER USER '{name}'@'%' IDENTIFIED BY {password}"),
        format!("GRANT ALL PRIVILEGES ON `{name}`.* TO '{name}'@'%'"),
    ])
}

fn check(name: &str) -> Result<(), AwsError> {
    if valid_identifier(name) {
        Ok(())
    } else {
        Err(AwsError::failed(
            InfraStep::Database,
            name,
            "is not a safe database name ([a-z0-9_], at most 32); this is a bug in StackBox",
        ))
    }
}

/// [`DatabaseBootstrap`] over sqlx's MySQL driver.
///
/// Without TLS: sqlx is built without a TLS feature, and RDS's certificates chain to the RDS CA
/// bundle, which no built-in root store holds. The connection stays inside the operator's VPC.
#[derive(Debug, Clone, Default)]
pub struct MysqlBootstrap;

fn db_error(resource: &str, error: sqlx::Error) -> AwsError {
    // sqlx's messages name the server's error, never the password.
    AwsError::Database {
        step: InfraStep::Database,
        resource: resource.to_string(),
        message: error.to_string(),
    }
}

async fn connect(server: &DbServer) -> Result<MySqlConnection, AwsError> {
    let resource = format!("server {}:{}", server.host, server.port);
    MySqlConnectOptions::new()
        .host(&server.host)
        .port(server.port)
        .username(&server.admin_user)
        .password(&server.admin_password)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|error| db_error(&resource, error))
}

impl DatabaseBootstrap for MysqlBootstrap {
    fn existing<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>> {
        Box::pin(async move {
            let mut connection = connect(server).await?;
            let mut found = Vec::new();
            for name in names {
                check(name)?;
                let rows = sqlx::query(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                )
                .bind(name)
                .fetch_all(&mut connection)
                .await
                .map_err(|error| db_error(name, error))?;
                if let Some(row) = rows.first() {
                    let value: String = row.try_get(0).map_err(|error| db_error(name, error))?;
                    found.push(value);
                }
            }
            let _ = connection.close().await;
            Ok(found)
        })
    }

    fn ensure<'a>(
        &'a self,
        server: &'a DbServer,
        grants: &'a [DbGrant],
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move {
            let mut connection = connect(server).await?;
            for grant in grants {
                for statement in ensure_statements(grant)? {
                    // Unprepared: DDL with literals; sqlx's error never repeats the statement.
                    connection
                        .execute(statement.as_str())
                        .await
                        .map_err(|error| db_error(&grant.name, error))?;
                }
            }
            let _ = connection.close().await;
            Ok(())
        })
    }

    fn remove<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move {
            let mut connection = connect(server).await?;
            for name in names {
                check(name)?;
                for statement in [
                    format!("DROP DATABASE IF EXISTS `{name}`"),
                    format!("DROP USER IF EXISTS '{name}'@'%'"),
                ] {
                    connection
                        .execute(statement.as_str())
                        .await
                        .map_err(|error| db_error(name, error))?;
                }
            }
            let _ = connection.close().await;
            Ok(())
        })
    }
}

/// Reaches every database server through one address (`aws.db_connect_via`: a tunnel, a
/// bastion or a proxy) instead of its endpoint.
pub struct Redirected {
    inner: Box<dyn DatabaseBootstrap>,
    host: String,
    port: u16,
}

impl Redirected {
    pub fn new(inner: Box<dyn DatabaseBootstrap>, host: String, port: u16) -> Redirected {
        Redirected { inner, host, port }
    }

    fn server(&self, server: &DbServer) -> DbServer {
        DbServer {
            host: self.host.clone(),
            port: self.port,
            ..server.clone()
        }
    }
}

impl DatabaseBootstrap for Redirected {
    fn existing<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, AwsError>> {
        Box::pin(async move { self.inner.existing(&self.server(server), names).await })
    }

    fn ensure<'a>(
        &'a self,
        server: &'a DbServer,
        grants: &'a [DbGrant],
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move { self.inner.ensure(&self.server(server), grants).await })
    }

    fn remove<'a>(
        &'a self,
        server: &'a DbServer,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(async move { self.inner.remove(&self.server(server), names).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_passwords_escaped() {
        assert!(valid_identifier("smithrealesta_e11f059b_espocrm"));
        for bad in ["", "a-b", "a`b", "A", "a b", &"x".repeat(33)] {
            assert!(!valid_identifier(bad), "{bad}");
        }
        assert_eq!(sql_string(r"it's\x"), r"'it''s\\x'");
        let statements = ensure_statements(&DbGrant::new("db_1", "p'w")).unwrap();
        assert!(statements[1].ends_with("IDENTIFIED BY 'p''w'"));
        assert!(ensure_statements(&DbGrant::new("x`; DROP", "p")).is_err());
        assert!(!format!("{:?}", DbGrant::new("db_1", "hunter2")).contains("hunter2"));
        assert!(!format!("{:?}", DbServer::new("h", 1, "u", "hunter2")).contains("hunter2"));
    }
}
