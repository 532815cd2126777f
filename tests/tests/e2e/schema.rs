//! The two backends' migrations build the same schema: the same tables with the same columns
//! (types differ by dialect). Runs when a PostgreSQL test server is configured.

use brokerbox_tests::postgres;
use sqlx::{Connection, Row};
use std::collections::BTreeSet;

/// `table.column` of every column of the application's tables.
type Columns = BTreeSet<String>;

async fn sqlite_columns(url: &str) -> Columns {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("name"))
    .collect();
    let mut columns = Columns::new();
    for table in tables {
        let rows = sqlx::query(&format!("PRAGMA table_info({table})"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for row in rows {
            columns.insert(format!("{table}.{}", row.get::<String, _>("name")));
        }
    }
    columns
}

async fn postgres_columns(url: &str) -> Columns {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| format!("{}.{}", r.get::<String, _>("t"), r.get::<String, _>("c")))
    .collect()
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_build_the_same_tables_and_columns() {
    let Some(server) = postgres::server() else {
        eprintln!(
            "skipped: set {} to compare with PostgreSQL",
            postgres::SERVER_ENV
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("schema.db").display());
    let pg = postgres::fresh_database(&server).await;
    brokerbox::store::open_ephemeral(&sqlite).await.unwrap();
    brokerbox::store::open_ephemeral(&pg).await.unwrap();
    let (sqlite, pg) = (sqlite_columns(&sqlite).await, postgres_columns(&pg).await);
    assert!(sqlite.len() > 40, "{sqlite:?}");
    let only_sqlite: Vec<_> = sqlite.difference(&pg).collect();
    let only_pg: Vec<_> = pg.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_pg.is_empty(),
        "only in SQLite: {only_sqlite:?}; only in PostgreSQL: {only_pg:?}"
    );
}
