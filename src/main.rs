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
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e @ switchboard::startup::StartupError::Config(_)) => {
            eprintln!("switchboard: {e}");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
