//! `DATABASE_URL_READ`: the rollups function reads from a real streaming replica (a hot standby
//! of the test cluster behind its own PgBouncer), and shows what the primary wrote once the
//! replica has replayed it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::{Event, Functions, TestDb, env};

const OWNER: &str = "user_replica";

/// The replica's own connection (not pooled), to this test's database once it has been
/// replayed there.
async fn replica(test: &TestDb) -> tokio_postgres::Client {
    let url = format!("{}/{}", env("TEST_REPLICA_DIRECT_BASE"), test.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the test database never reached the replica: {e}"),
        }
    }
}

/// Waits until the replica has replayed everything the primary has written so far (up to the
/// WAL insert position: the test cluster commits asynchronously, so a commit may not have been
/// written out yet).
async fn caught_up(test: &TestDb, replica: &tokio_postgres::Client) {
    let lsn: String = test
        .direct
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replayed: bool = replica
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .unwrap()
            .get(0);
        if replayed {
            return;
        }
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rollups_read_the_replica_and_see_a_reading_once_it_is_replayed() {
    let test = TestDb::new().await;
    let replica = replica(&test).await;
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "a hot standby");
    let functions =
        Functions::new(&test.config(&[("DATABASE_URL_READ", test.replica_url().expose())]));
    let (device, key) = test.device(OWNER).await;
    caught_up(&test, &replica).await;
    let latest = || async {
        let (status, body) = functions
            .call(
                Event::load("rollups")
                    .as_user(OWNER)
                    .at("GET", &format!("/v1/devices/{device}/latest")),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["metrics"].clone()
    };
    assert_eq!(latest().await, json!([]));

    // Replay paused: the primary stores the reading, the replica (what rollups reads) lacks it.
    replica
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: String = replica
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .await
            .unwrap()
            .get(0);
        if state == "paused" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = functions
        .call(
            Event::load("ingest")
                .header("authorization", &format!("Bearer {key}"))
                .json_body(&json!({"readings": [{"metric": "t", "value": "21.5"}]})),
        )
        .await;
    let while_paused = latest().await;
    replica
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(test.count("sensor_readings").await, 1, "on the primary");
    assert_eq!(while_paused, json!([]), "rollups read the replica");

    caught_up(&test, &replica).await;
    let metrics: Value = latest().await;
    assert_eq!(metrics[0]["metric"], "t");
    assert_eq!(metrics[0]["value"], "21.5");
}
