//! `notify_deliveries_per_s`: one delivery run of a pass with many deliveries due, sent to a
//! local receiver that answers at once, and the share of the pass's minute it took.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::notify::Notifier;
use shared::notify::deliver::{self, Plan};
use tests::TestDb;
use tests::receiver::Receiver;

use crate::{Report, Scale, Sizes};

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    let due: i64 = if sizes.scale == Scale::Tiny {
        500
    } else {
        10_000
    };
    let channels = 100_i64;
    let test = TestDb::new().await;
    let receiver = Receiver::start().await;
    let secret = shared::notify::new_signing_secret();
    test.direct
        .batch_execute(r#"INSERT INTO "user" (id) VALUES ('user_bench_notify')"#)
        .await
        .expect("user");
    test.direct
        .execute(
            "INSERT INTO channels (owner_id, name, type, target, events, signing_secret)
             SELECT 'user_bench_notify', 'c' || i, 'webhook', jsonb_build_object('url', $1::text),
                    '{alert.firing}', $2
             FROM generate_series(1, $3::int8) i",
            &[&receiver.url("/hook"), &secret, &channels],
        )
        .await
        .expect("channels");
    test.direct
        .execute(
            "WITH c AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM channels),
             e AS (
                 INSERT INTO notification_events (owner_id, type, occurred_at, payload)
                 SELECT 'user_bench_notify', 'alert.firing', now(),
                        jsonb_build_object('type', 'alert.firing', 'n', i)
                 FROM generate_series(1, $1::int8) i
                 RETURNING id, seq
             )
             INSERT INTO deliveries (event_id, channel_id, event_seq, status, next_attempt_at,
                                     created_at)
             SELECT e.id, c.id, e.seq, 'pending', now(), now()
             FROM e JOIN c ON c.n = e.seq % $2::int8",
            &[&due, &channels],
        )
        .await
        .expect("deliveries");
    let config = test.config(&[("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")]);
    let notifier = Notifier::new(&config.notify);
    let db = test.db();
    let clock: shared::notify::Clock =
        Arc::new(|| chrono::Utc::now() + chrono::TimeDelta::seconds(1));
    let started = Instant::now();
    let sent = deliver::deliver_due(
        &db,
        &notifier,
        &clock,
        Plan::default(),
        started + Duration::from_secs(48),
    )
    .await
    .expect("deliveries run");
    let took = started.elapsed().as_secs_f64();
    assert_eq!(
        sent.delivered, due,
        "every due delivery is delivered: {sent:?}"
    );
    assert_eq!(receiver.received().len() as i64, due);
    report.add(
        "notify_deliveries_per_s",
        due as f64 / took,
        "1/s",
        None,
        &format!("{due} due, signed, to a local receiver"),
        None,
    );
    let share = took / 60.0;
    report.add(
        "notify_pass_share",
        share,
        "of 60 s",
        None,
        "<= 0.5 of the minute",
        Some(share <= 0.5),
    );
}
