//! `shared::db` through the hostile pooler: what would break behind Neon breaks here.

use std::time::Duration;

use shared::db::{DbError, Sql, Timeouts};
use tests::{TestDb, bouncer_admin, connect};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

const ADD_ONE: Sql = Sql::idempotent("SELECT $1::int4 + 1");

#[tokio::test]
async fn canary_named_statements_fail_through_the_pooler_and_typed_ones_work() {
    let test = TestDb::new().await;

    // The driver's default path prepares a named statement, then uses it in a later
    // transaction; PgBouncer has run DISCARD ALL in between.
    let plain = connect(test.pooled_url().expose()).await;
    let error = plain
        .query("SELECT $1::int4 + 1", &[&41i32])
        .await
        .expect_err("a named prepared statement cannot survive DISCARD ALL");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("prepared statement") && message.contains("does not exist"),
        "unexpected error: {error:?}"
    );

    let db = test.db();
    let row = db
        .query_typed_one(&ADD_ONE, &[(&41i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // And again, on the same connection, many times over.
    for i in 0..20i32 {
        let row = db
            .query_typed_one(&ADD_ONE, &[(&i, Type::INT4)])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    assert_eq!(db.generation().await, 1, "one connection for all of it");
}

#[tokio::test]
async fn session_state_does_not_survive_a_transaction() {
    // Proves DISCARD ALL runs after every transaction: a session setting is gone at once.
    let test = TestDb::new().await;
    let plain = connect(test.pooled_url().expose()).await;
    // (Not application_name: PgBouncer tracks that one and replays it on purpose.)
    plain.simple_query("SET work_mem = '7777kB'").await.unwrap();
    let rows = plain.simple_query("SHOW work_mem").await.unwrap();
    let shown = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(shown.as_deref(), Some("4MB"), "the default again");
}

#[tokio::test]
async fn concurrent_queries_share_one_connection() {
    let test = TestDb::new().await;
    let db = test.db();
    let results = futures::future::join_all((0..50i32).map(|i| {
        let db = &db;
        async move {
            db.query_typed_one(&ADD_ONE, &[(&i, Type::INT4)])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    }))
    .await;
    assert_eq!(results, (1..=50).collect::<Vec<_>>());
    assert_eq!(db.generation().await, 1);
}

/// The server ends the backend running `pg_sleep` (as when Neon suspends a compute): PgBouncer
/// then closes the client connection that was using it.
async fn terminate_sleeping_backend(test: &TestDb) {
    for _ in 0..100 {
        let rows = test
            .direct
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
                &[&test.name],
            )
            .await
            .unwrap();
        if !rows.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the slow statement never started");
}

/// Kills every client and server connection of the test database at the pooler.
async fn kill_connections(test: &TestDb) {
    bouncer_admin(&format!("KILL {}", test.name)).await;
    // KILL pauses the database in PgBouncer until RESUME.
    bouncer_admin(&format!("RESUME {}", test.name)).await;
}

#[tokio::test]
async fn a_killed_connection_is_replaced_on_next_use() {
    let test = TestDb::new().await;
    let db = test.db();
    db.query_typed_one(&ADD_ONE, &[(&1i32, Type::INT4)])
        .await
        .unwrap();
    kill_connections(&test).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let row = db
        .query_typed_one(&ADD_ONE, &[(&1i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(db.generation().await, 2, "a new connection was opened");
}

const SLOW_SELECT: Sql = Sql::idempotent("SELECT 1::int4 FROM pg_sleep(0.5)");
const SLOW_INSERT: Sql =
    Sql::once("INSERT INTO retry_probe (n) SELECT $1::int4 FROM pg_sleep(0.5)");

#[tokio::test]
async fn an_idempotent_statement_cut_off_mid_flight_is_retried_once() {
    let test = TestDb::new().await;
    let db = test.db();
    db.query_typed_one(&ADD_ONE, &[(&1i32, Type::INT4)])
        .await
        .unwrap();

    let (result, ()) = tokio::join!(
        db.query_typed_one(&SLOW_SELECT, &[]),
        terminate_sleeping_backend(&test)
    );
    assert_eq!(result.unwrap().get::<_, i32>(0), 1);
    assert_eq!(db.generation().await, 2);
}

#[tokio::test]
async fn a_non_idempotent_write_cut_off_mid_flight_is_not_retried() {
    let test = TestDb::new().await;
    test.direct
        .batch_execute("CREATE TABLE retry_probe (n int4 NOT NULL)")
        .await
        .unwrap();
    let db = test.db();
    db.query_typed_one(&ADD_ONE, &[(&1i32, Type::INT4)])
        .await
        .unwrap();

    let (result, ()) = tokio::join!(
        db.execute_typed(&SLOW_INSERT, &[(&7i32, Type::INT4)]),
        terminate_sleeping_backend(&test)
    );
    assert!(matches!(result, Err(DbError::Unavailable(_))), "{result:?}");
    assert_eq!(
        test.count("retry_probe").await,
        0,
        "not written, and not written twice"
    );

    // The instance recovers by itself on the next call.
    assert_eq!(
        db.execute_typed(&SLOW_INSERT, &[(&8i32, Type::INT4)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(test.count("retry_probe").await, 1);
    assert_eq!(db.generation().await, 2);
}

#[tokio::test]
async fn after_an_idle_spell_the_connection_is_checked_before_use() {
    let test = TestDb::new().await;
    let db = test.db_with(Timeouts {
        idle_check_after: Duration::from_millis(100),
        ..Timeouts::default()
    });
    test.direct
        .batch_execute("CREATE TABLE retry_probe (n int4 NOT NULL)")
        .await
        .unwrap();
    db.query_typed_one(&ADD_ONE, &[(&1i32, Type::INT4)])
        .await
        .unwrap();
    kill_connections(&test).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Even a write that may not be retried succeeds: the dead connection is found before it.
    assert_eq!(
        db.execute_typed(&SLOW_INSERT, &[(&1i32, Type::INT4)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(db.generation().await, 2);
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_not_a_hang() {
    let db = shared::db::Db::with_timeouts(
        &shared::config::Secret::new("postgres://postgres@127.0.0.1:1/nothing?sslmode=disable"),
        Timeouts {
            connect: Duration::from_secs(2),
            ..Timeouts::default()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let result = db.query_typed(&ADD_ONE, &[(&1i32, Type::INT4)]).await;
    assert!(matches!(result, Err(DbError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The test server speaks no TLS. The driver's default (`prefer`) would quietly fall back to
/// plain TCP; here a URL without `sslmode=disable` must refuse to connect instead.
#[tokio::test]
async fn tls_is_required_unless_the_url_disables_it() {
    let test = TestDb::new().await;
    let plain = test.pooled_url().expose().to_owned();
    let bare = plain.replace("?sslmode=disable", "");
    for url in [
        bare.clone(),
        format!("{bare}?sslmode=prefer"),
        format!("{bare}?sslmode=require"),
    ] {
        let db = shared::db::Db::new(&shared::config::Secret::new(url.clone())).unwrap();
        let result = db.query_typed(&ADD_ONE, &[(&1i32, Type::INT4)]).await;
        assert!(
            matches!(result, Err(DbError::Unavailable(_))),
            "{url}: {result:?}"
        );
    }
    let db = shared::db::Db::new(&shared::config::Secret::new(plain)).unwrap();
    assert!(
        db.query_typed(&ADD_ONE, &[(&1i32, Type::INT4)])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn server_errors_are_not_connection_errors() {
    let test = TestDb::new().await;
    let db = test.db();
    let error = db
        .query_typed(
            &Sql::idempotent("SELECT 1 / $1::int4"),
            &[(&0i32, Type::INT4)],
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    assert_eq!(db.generation().await, 1, "the connection is kept");
}

/// The database's own bounds (migration V4) reach every transaction through the pooler, and a
/// statement that runs past the server's bound is cancelled there (`57014`), even when the client
/// would have waited on.
#[tokio::test]
async fn the_server_cancels_a_statement_past_its_bound() {
    const SETTINGS: Sql = Sql::idempotent(
        "SELECT current_setting('statement_timeout') AS statement,
                current_setting('lock_timeout') AS lock,
                current_setting('idle_in_transaction_session_timeout') AS idle",
    );
    const SLEEP: Sql = Sql::idempotent("SELECT pg_sleep(30)");
    let test = TestDb::new().await;
    let patient = test.db_with(Timeouts {
        statement: std::time::Duration::from_secs(40),
        ..Timeouts::default()
    });
    let row = patient.query_typed_one(&SETTINGS, &[]).await.unwrap();
    let settings: (String, String, String) =
        (row.get("statement"), row.get("lock"), row.get("idle"));
    assert_eq!(settings, ("12s".into(), "5s".into(), "15s".into()));
    let started = std::time::Instant::now();
    let error = patient.query_typed(&SLEEP, &[]).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(11) && took < std::time::Duration::from_secs(20),
        "{took:?}"
    );
}
