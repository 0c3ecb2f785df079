use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::init();
    let config = shared::config::Config::load().await?;
    let state = alert_eval::State::new(&config)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async {
        alert_eval::handle(&state, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
