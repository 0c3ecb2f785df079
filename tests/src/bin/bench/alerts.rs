//! Alert evaluation: the first pass (every rule built), a pass a minute later (one new reading per
//! series; verdicts kept, or flapping), a pass when nothing changed, how a pass grows with rules
//! and with stored history, and how much a dense adversarial tenant slows everyone's pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use alert_eval::{Budget, State};
use tests::{Event, TestDb};

use crate::{Report, Samples, Scale, Sizes, analyze, ms};

/// `rules` rules (10 per device, one per metric, half with `for_seconds`) over `readings`
/// readings spread evenly across the rules' series, 30 s apart, ending now.
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
    // These readings existed before the evaluation was deployed (what migration V4 records for
    // real data): the first pass builds every rule from the table instead of folding them.
    test.direct
        .batch_execute("UPDATE evaluation_progress SET arrivals_through = now()")
        .await
        .expect("progress");
    analyze(&test).await;
    test
}

/// The dense tenant of the issue: one metric with a reading every second for a day, and 100 rules
/// `gt 0, for_seconds 86400` on it (all breaching, so every window is the whole day).
async fn add_dense_tenant(test: &TestDb) {
    test.direct
        .batch_execute(
            r#"INSERT INTO "user" (id) VALUES ('user_dense');
               INSERT INTO devices (id, owner_id, name, device_key_hash, status, last_seen_at)
               VALUES ('00000000-0000-0000-0000-0000000000de', 'user_dense', 'dense',
                       sha256('dense'::bytea), 'online', now());
               INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
               SELECT '00000000-0000-0000-0000-0000000000de', 'dense', 1 + g % 50,
                      now() - g * interval '1 second'
               FROM generate_series(0, 86399) g;
               INSERT INTO alert_rules (device_id, metric, comparator, threshold, for_seconds)
               SELECT '00000000-0000-0000-0000-0000000000de', 'dense', 'gt', 0, 86400
               FROM generate_series(1, 100);
               UPDATE evaluation_progress SET arrivals_through = now();"#,
        )
        .await
        .expect("dense tenant");
    analyze(test).await;
}

/// Rounds of new readings, counted across the whole run so that each is newer than the last.
static ROUND: AtomicI64 = AtomicI64::new(0);

/// A minute of new readings: one per ordinary series, and (when `dense`) 60 for the dense one,
/// newer than anything stored. Steady values keep each rule's verdict (the newest generated
/// reading of series `m` is `m`); flapping ones move 13 a minute across the threshold (50), so
/// about a quarter of the rules change state and the pass writes that many alerts. Not timed.
async fn a_minute_later(test: &TestDb, dense: bool, flapping: bool) {
    let round = ROUND.fetch_add(1, Ordering::Relaxed) + 1;
    let step: i64 = if flapping { 13 } else { 0 };
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT d.id, 'm' || m, ($1::int8 * $2::int8 + m) % 100,
                    now() + $1::int8 * interval '1 minute'
             FROM devices d, generate_series(0, 9) m
             WHERE d.owner_id = 'user_eval'",
            &[&round, &step],
        )
        .await
        .expect("a minute of readings");
    if dense {
        test.direct
            .execute(
                "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
                 SELECT '00000000-0000-0000-0000-0000000000de', 'dense', 1 + g,
                        now() + $1::int8 * interval '1 minute' + g * interval '1 second'
                 FROM generate_series(0, 59) g",
                &[&round],
            )
            .await
            .expect("a minute of dense readings");
    }
}

/// The pass as the benchmark runs it: readings are inserted just before, so no arrival margin.
fn state(test: &TestDb) -> State {
    let budget = Budget {
        arrival_margin: Duration::ZERO,
        ..Budget::default()
    };
    let config = test.config(&[]);
    let notifier = shared::notify::Notifier::new(&config.notify);
    State::with(&config, budget, Arc::new(chrono::Utc::now), notifier).expect("alert-eval state")
}

struct Passes {
    /// The first pass: every rule built from the table.
    build: Duration,
    /// Median of passes each after a minute of new readings that keep every rule's verdict.
    minute: Duration,
    /// Median of passes with nothing new.
    steady: Duration,
    /// Median of passes each after a minute of readings that flip about a quarter of the rules.
    flapping: Duration,
}

async fn passes(test: &TestDb, rounds: usize, dense: bool) -> Passes {
    let state = state(test);
    let event = Event::load("alert-eval-schedule").json().clone();
    let started = std::time::Instant::now();
    let first = alert_eval::handle(&state, event.clone())
        .await
        .expect("first pass");
    let build = started.elapsed();
    assert_eq!(first.rules_pending, 0, "{first:?}");
    let (mut minute, mut steady, mut flapping) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..rounds {
        a_minute_later(test, dense, false).await;
        let summary = minute
            .time(alert_eval::handle(&state, event.clone()))
            .await
            .expect("pass");
        assert!(
            summary.rules_evaluated > 0 && summary.rules_pending == 0,
            "{summary:?}"
        );
        steady
            .time(alert_eval::handle(&state, event.clone()))
            .await
            .expect("steady pass");
    }
    for _ in 0..rounds {
        a_minute_later(test, dense, true).await;
        flapping
            .time(alert_eval::handle(&state, event.clone()))
            .await
            .expect("flapping pass");
    }
    Passes {
        build,
        minute: minute.median(),
        steady: steady.median(),
        flapping: flapping.median(),
    }
}

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    let rounds = sizes.repetitions.clamp(3, 5);
    eprintln!(
        "bench: alert evaluation ({} rules over {} readings; {rounds} passes a minute apart)",
        sizes.rules, sizes.eval_readings
    );
    let big = alert_data(sizes.rules, sizes.eval_readings).await;
    let full = passes(&big, rounds, false).await;
    let goal_applies = sizes.scale == Scale::Large;
    report.add(
        &format!("alert_eval_{}_rules_ms", sizes.rules),
        ms(full.minute),
        "ms (p50)",
        None,
        "<= 1000 ms (100k rules)",
        goal_applies.then_some(ms(full.minute) <= 1000.0),
    );
    report.add(
        "alert_eval_steady_pass_ms",
        ms(full.steady),
        "ms (p50)",
        None,
        "report (nothing changed)",
        None,
    );
    report.add(
        "alert_eval_flapping_ms",
        ms(full.flapping),
        "ms (p50)",
        None,
        "report (a quarter of the rules change state)",
        None,
    );
    report.add(
        "alert_eval_build_ms",
        ms(full.build),
        "ms",
        None,
        "report (first pass)",
        None,
    );
    // Fewer rules over the same readings.
    big.direct
        .execute(
            "DELETE FROM alert_rules WHERE id NOT IN (SELECT id FROM alert_rules ORDER BY id LIMIT $1)",
            &[&sizes.rules_small],
        )
        .await
        .expect("drop rules");
    let fewer = passes(&big, rounds, false).await;
    let ratio = full.minute.as_secs_f64() / fewer.minute.as_secs_f64();
    let rules_factor = (sizes.rules / sizes.rules_small) as f64;
    report.add(
        "alert_eval_scaling_rules",
        ratio,
        "x",
        Some((ms(fewer.minute), ratio)),
        &format!("<= {:.1} ({}x rules)", rules_factor * 1.2, rules_factor),
        Some(ratio <= rules_factor * 1.2),
    );
    drop(big);
    // The same rules over a tenth of the readings.
    let small = alert_data(sizes.rules, sizes.eval_readings_small).await;
    let fewer_readings = passes(&small, rounds, false).await;
    let ratio = full.minute.as_secs_f64() / fewer_readings.minute.as_secs_f64();
    report.add(
        "alert_eval_scaling_readings",
        ratio,
        "x",
        Some((ms(fewer_readings.minute), ratio)),
        &format!(
            "<= 1.2 ({}x readings)",
            sizes.eval_readings / sizes.eval_readings_small
        ),
        Some(ratio <= 1.2),
    );
    drop(small);
    // 10,000 ordinary rules (or the small scale's count) with and without the dense tenant.
    // These passes take tens of milliseconds, so a ratio of two medians of five moved by ±40%
    // from run to run: three times the passes here.
    let ordinary = sizes.rules_small;
    let without = alert_data(ordinary, ordinary * 100).await;
    let alone = passes(&without, rounds * 3, false).await;
    drop(without);
    let with = alert_data(ordinary, ordinary * 100).await;
    add_dense_tenant(&with).await;
    let beside = passes(&with, rounds * 3, true).await;
    // And the dense tenant's own rules work: a day of breaching readings, every rule firing.
    let firing: i64 = with
        .direct
        .query_one(
            "SELECT count(*) FROM alerts
             WHERE device_id = '00000000-0000-0000-0000-0000000000de' AND status = 'firing'",
            &[],
        )
        .await
        .expect("dense alerts")
        .get(0);
    assert_eq!(firing, 100, "every dense rule fires");
    let ratio = beside.minute.as_secs_f64() / alone.minute.as_secs_f64();
    report.add(
        "alert_eval_adversarial_ratio",
        ratio,
        "x",
        Some((ms(alone.minute), ratio)),
        &format!("<= 1.2 ({ordinary} rules + 100 dense; large)"),
        // The goal is for 10,000 ordinary rules; beside fewer, the fixed-size dense tenant weighs more.
        goal_applies.then_some(ratio <= 1.2),
    );
    report.add(
        "alert_eval_adversarial_build_ms",
        ms(beside.build),
        "ms",
        Some((
            ms(alone.build),
            beside.build.as_secs_f64() / alone.build.as_secs_f64(),
        )),
        "report (first pass, once)",
        None,
    );
}
