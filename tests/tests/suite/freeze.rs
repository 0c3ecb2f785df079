//! A frozen Lambda instance: the real `ingest` binary, stopped with SIGSTOP while the pooler
//! kills its connection, then resumed: the next invocation succeeds on a fresh connection.

use std::process::Stdio;
use std::time::Duration;

use tests::runtime_api::{RuntimeApi, ingest_event, status_of};
use tests::{TestDb, bouncer_admin, workspace_binary};

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test]
async fn a_frozen_instance_whose_connection_died_recovers_on_the_next_invocation() {
    let test = TestDb::new().await;
    let (_, key) = test.device("user_freeze").await;
    let api = RuntimeApi::start().await;
    let mut child = api
        .command(&workspace_binary("ingest"), "ingest")
        .env("DATABASE_URL", test.pooled_url().expose())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the ingest binary");
    let pid = child.id().expect("running");

    api.push(ingest_event(&key, 1)).await;
    let answers = tokio::time::timeout(Duration::from_secs(30), api.answers(1))
        .await
        .unwrap();
    assert_eq!(status_of(&answers[0].2), 200, "{}", answers[0].2);

    // Frozen between invocations, as Lambda does; meanwhile the pooler drops the connection
    // (as Neon does when it suspends an idle compute).
    signal(pid, "-STOP");
    bouncer_admin(&format!("KILL {}", test.name)).await;
    bouncer_admin(&format!("RESUME {}", test.name)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(pid, "-CONT");

    api.push(ingest_event(&key, 2)).await;
    api.push(ingest_event(&key, 3)).await;
    let answers = tokio::time::timeout(Duration::from_secs(30), api.answers(3))
        .await
        .unwrap();
    for (_, _, answer) in &answers[1..] {
        assert_eq!(status_of(answer), 200, "{answer}");
    }
    assert_eq!(test.count("sensor_readings").await, 3);
    let _ = child.kill().await;
}
