//! One integration-test binary (one link on a 2-core machine), one module per area.
//! Run through `scripts/test`, which starts PostgreSQL behind a transaction-mode PgBouncer.

mod alert_eval;
mod auth;
mod authorization;
mod ceiling;
mod clerk_webhook;
mod config_secrets;
mod contract;
mod db_pooler;
mod device_keys;
mod devices;
mod faults;
mod freeze;
mod hostile;
mod ingest;
mod lifecycle;
mod limits;
mod logs;
mod migrations;
mod notifications;
mod replica;
mod rollups;
mod routes;
