//! A fresh PostgreSQL database per test, on the server named by `BROKERBOX_TEST_POSTGRES`
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`), so tests never see each other's state.

use sqlx::Connection;

/// The environment variable naming the PostgreSQL server for tests.
pub const SERVER_ENV: &str = "BROKERBOX_TEST_POSTGRES";
/// Set to `postgres` to run every runtime of the test suite on PostgreSQL instead of SQLite.
pub const BACKEND_ENV: &str = "BROKERBOX_TEST_BACKEND";

/// The test server's URL, if one is configured.
pub fn server() -> Option<String> {
    std::env::var(SERVER_ENV).ok().filter(|url| !url.is_empty())
}

/// Whether the whole suite runs on PostgreSQL.
pub fn suite_on_postgres() -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|b| b == "postgres")
}

/// Creates an empty database on `server` and returns its URL.
///
/// # Panics
/// When the server cannot be reached or refuses to create the database.
pub async fn fresh_database(server: &str) -> String {
    let name = format!("bbx_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .expect("the PostgreSQL test server answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    database_url(server, &name)
}

/// `server`'s URL naming database `name` instead of its own; its query (a `?host=` socket
/// directory, say) is kept.
fn database_url(server: &str, name: &str) -> String {
    let (url, query) = server
        .split_once('?')
        .map_or((server, None), |(url, query)| (url, Some(query)));
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fresh_database_s_url_keeps_the_server_s_host_and_query() {
        assert_eq!(
            super::database_url("postgres://postgres@127.0.0.1:5432/test", "bbx_1"),
            "postgres://postgres@127.0.0.1:5432/bbx_1"
        );
        assert_eq!(
            super::database_url(
                "postgres://postgres@localhost/test?host=/var/run/postgresql",
                "bbx_1"
            ),
            "postgres://postgres@localhost/bbx_1?host=/var/run/postgresql"
        );
        assert_eq!(
            super::database_url(
                "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test",
                "bbx_1"
            ),
            "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/bbx_1"
        );
    }
}
