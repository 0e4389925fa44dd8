//! `switchboard`: settings → telemetry → Application::build → run until SIGTERM.

use switchboard::config::Settings;
use switchboard::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard: {e}");
            std::process::exit(2);
        }
    };
    // Flushes buffered spans when main returns.
    let _telemetry = switchboard::telemetry::init(settings.log_format)?;
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
