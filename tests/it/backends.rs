//! The durable state backends fault tests run against: an SQLite file, a private PostgreSQL
//! table and a private MariaDB schema, each with random names and cleaned up afterwards.

use std::path::PathBuf;

/// One backend instance whose data outlives the sidecars started on it.
pub enum Backend {
    /// A database file in a temp folder.
    Sqlite(tempfile::TempDir),
    /// A table in the shared PostgreSQL `test` database.
    Postgres(String),
    /// A schema in the shared MariaDB.
    Mysql(String),
}

const PG: &str = "host=127.0.0.1 user=postgres dbname=test";

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

impl Backend {
    /// A fresh SQLite backend.
    pub fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh PostgreSQL table.
    pub fn postgres() -> Self {
        Backend::Postgres(format!("rapr_fault_{}", suffix()))
    }

    /// A fresh MariaDB schema.
    pub fn mysql() -> Self {
        Backend::Mysql(format!("rapr_fault_{}", suffix()))
    }

    /// The label used in failpoint names (`state:<label>:transact:mid`).
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
            Backend::Mysql(_) => "mysql",
        }
    }

    /// A component YAML named `name` on this backend.
    pub fn yaml(&self, name: &str) -> String {
        let (ty, md) = match self {
            Backend::Sqlite(dir) => ("state.sqlite", vec![("connectionString", self.sqlite_path(dir).display().to_string())]),
            Backend::Postgres(table) => ("state.postgresql", vec![("connectionString", PG.to_string()), ("tableName", table.clone()), ("metadataTableName", format!("{table}_md"))]),
            Backend::Mysql(schema) => ("state.mysql", vec![("connectionString", "root:@tcp(127.0.0.1:3306)/?allowNativePasswords=true".to_string()), ("schemaName", schema.clone())]),
        };
        let items: String = md.iter().map(|(k, v)| format!("  - name: {k}\n    value: \"{v}\"\n")).collect();
        format!("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  version: v1\n  metadata:\n{items}")
    }

    fn sqlite_path(&self, dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("durable.db")
    }

    /// Drops what the backend created on a shared server.
    pub async fn cleanup(&self) {
        match self {
            Backend::Sqlite(_) => {}
            Backend::Postgres(table) => {
                let (c, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                c.batch_execute(&format!("DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_md")).await.unwrap();
            }
            Backend::Mysql(schema) => {
                use mysql_async::prelude::Queryable;
                let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url("mysql://root@127.0.0.1:3306").unwrap()).await.unwrap();
                c.query_drop(format!("DROP DATABASE IF EXISTS {schema}")).await.unwrap();
                let _ = c.disconnect().await;
            }
        }
    }
}
