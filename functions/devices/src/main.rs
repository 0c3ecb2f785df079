use lambda_http::{Error, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::init();
    let config = shared::config::Config::load().await?;
    let state = devices::State::new(&config)?;
    lambda_http::run(service_fn(|req| async {
        Ok::<_, std::convert::Infallible>(devices::handle(&state, req).await)
    }))
    .await
}
