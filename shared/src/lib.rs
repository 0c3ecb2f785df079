//! What every function needs and nothing one function alone needs.

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod logging;
pub mod migrate;
#[cfg(feature = "notify")]
pub mod notify;
pub mod paging;
pub mod users;

/// Process start-up for every binary: the TLS crypto provider, then logging ([`logging`]).
pub fn init() {
    install_crypto_provider();
    logging::init();
}

/// rustls needs one process-wide provider; several crates here could bring one, so pick aws-lc-rs
/// explicitly. Safe to call more than once.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
