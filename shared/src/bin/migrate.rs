//! `cargo run -p shared --bin migrate`: applies `migrations/` to `DATABASE_URL_DIRECT`
//! (falling back to `DATABASE_URL`). Once per deploy; a no-op when the schema is current.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    shared::init();
    let config = match shared::config::Config::load().await {
        Ok(config) => config,
        Err(error) => {
            eprintln!("migrate: {error}");
            return ExitCode::FAILURE;
        }
    };
    match shared::migrate::run(config.migration_url()).await {
        Ok(applied) if applied.is_empty() => {
            println!("migrate: schema is up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for name in applied {
                println!("migrate: applied {name}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("migrate: {error}");
            ExitCode::FAILURE
        }
    }
}
