//! Alert evaluation: a full pass, and how it grows with rules and with stored readings.

use std::time::Duration;

use tests::{Event, TestDb};

use crate::{Report, Samples, Scale, Sizes, analyze, ms};

/// A database with `rules` rules (10 per device, one per metric, half with `for_seconds`)
/// over `readings` readings spread evenly across the rules' series.
async fn alert_data(rules: i64, readings: i64) -> TestDb {
    let test = TestDb::new().await;
    let devices = (rules / 10).max(1);
    let per_series = (readings / (devices * 10)).max(1);
    test.direct
        .execute(
            r#"WITH u AS (INSERT INTO "user" (id) VALUES ('user_eval'))
               INSERT INTO devices (owner_id, name, device_key_hash, status, last_seen_at)
               SELECT 'user_eval', 'device ' || g, sha256(('eval' || g)::bytea), 'online', now()
               FROM generate_series(1, $1::int8) g"#,
            &[&devices],
        )
        .await
        .expect("devices");
    test.direct
        .batch_execute(
            "INSERT INTO alert_rules (device_id, metric, comparator, threshold, for_seconds)
             SELECT d.id, 'm' || m, CASE WHEN m % 2 = 0 THEN 'gt' ELSE 'lte' END, 50,
                    CASE WHEN m % 3 = 0 THEN 300 ELSE 0 END
             FROM devices d, generate_series(0, 9) m",
        )
        .await
        .expect("rules");
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT d.id, 'm' || m, (g * 7 + m) % 100, now() - (g * interval '30 seconds')
             FROM devices d, generate_series(0, 9) m, generate_series(0, $1::int8 - 1) g",
            &[&per_series],
        )
        .await
        .expect("readings");
    analyze(&test).await;
    test
}

/// The median of `passes` evaluation passes after one warm-up pass (which fires the alerts).
async fn eval_time(test: &TestDb, passes: usize) -> Duration {
    let state = alert_eval::State::new(&test.config(&[])).expect("alert-eval state");
    let event = Event::load("alert-eval-schedule").json().clone();
    alert_eval::handle(&state, event.clone())
        .await
        .expect("warm-up pass");
    let mut samples = Samples::default();
    for _ in 0..passes {
        samples
            .time(alert_eval::handle(&state, event.clone()))
            .await
            .expect("pass");
    }
    samples.median()
}

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    let passes = sizes.repetitions.clamp(3, 5);
    eprintln!(
        "bench: alert evaluation ({} rules over {} readings; {passes} passes)",
        sizes.rules, sizes.eval_readings
    );
    let big = alert_data(sizes.rules, sizes.eval_readings).await;
    let full = eval_time(&big, passes).await;
    let goal_applies = sizes.scale == Scale::Large;
    report.add(
        &format!("alert_eval_{}_rules_ms", sizes.rules),
        ms(full),
        "ms (p50)",
        None,
        "<= 2000 ms (100k rules)",
        goal_applies.then_some(ms(full) <= 2000.0),
    );
    // Fewer rules over the same readings.
    big.direct
        .execute("DELETE FROM alert_rules WHERE id NOT IN (SELECT id FROM alert_rules ORDER BY id LIMIT $1)", &[&sizes.rules_small])
        .await
        .expect("drop rules");
    let fewer = eval_time(&big, passes).await;
    let ratio = full.as_secs_f64() / fewer.as_secs_f64();
    let rules_factor = (sizes.rules / sizes.rules_small) as f64;
    report.add(
        "alert_eval_scaling_rules",
        ratio,
        "x",
        Some((ms(fewer), ratio)),
        &format!("<= {:.1} ({}x rules)", rules_factor * 1.2, rules_factor),
        Some(ratio <= rules_factor * 1.2),
    );
    drop(big);
    // The same rules over fewer readings.
    let small = alert_data(sizes.rules, sizes.eval_readings_small).await;
    let fewer_readings = eval_time(&small, passes).await;
    let ratio = full.as_secs_f64() / fewer_readings.as_secs_f64();
    report.add(
        "alert_eval_scaling_readings",
        ratio,
        "x",
        Some((ms(fewer_readings), ratio)),
        &format!(
            "<= 1.5 ({}x readings)",
            sizes.eval_readings / sizes.eval_readings_small
        ),
        Some(ratio <= 1.5),
    );
}
