//! What every function needs and nothing one function alone needs.

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod migrate;
#[cfg(feature = "notify")]
pub mod notify;
pub mod paging;
pub mod users;

/// Process start-up for every binary: the TLS crypto provider, then logging (JSON when Lambda's
/// `AWS_LAMBDA_LOG_FORMAT=JSON`, level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`).
pub fn init() {
    install_crypto_provider();
    lambda_http::tracing::init_default_subscriber();
}

/// rustls needs one process-wide provider; several crates here could bring one, so pick aws-lc-rs
/// explicitly. Safe to call more than once.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
