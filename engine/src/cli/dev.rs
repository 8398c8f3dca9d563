//! `nudge dev`: tools for development and demos.

use std::process::ExitCode;

use nudge_connectors::wechat::mock::{Faults, MockConfig, MockWechat};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a mock of WeChat's API on loopback (tokens, subscribe/send, gettemplate, admin API)
    MockWechat {
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// App secret the mock expects (give the same to the wechat connector's secret_env)
        #[arg(long, default_value = "mock-secret")]
        secret: String,
        #[arg(long, default_value = "wxmock")]
        appid: String,
        /// Share of sends answered -1 (busy)
        #[arg(long, default_value_t = 0.0)]
        busy_share: f64,
        /// Share of sends answered HTTP 500 (not delivered)
        #[arg(long, default_value_t = 0.0)]
        http500_share: f64,
        /// Share of sends delivered, then answered HTTP 502 (a gateway that lost WeChat's answer)
        #[arg(long, default_value_t = 0.0)]
        gateway_502_share: f64,
        /// Share of sends delivered, then the connection dropped without an answer
        #[arg(long, default_value_t = 0.0)]
        drop_share: f64,
        /// Added latency per send, in milliseconds
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Token lifetime in seconds
        #[arg(long, default_value_t = 7_200)]
        token_ttl_s: u64,
        /// Credits every (openid, template) starts with
        #[arg(long, default_value_t = 0)]
        default_credits: i64,
        /// Keep credits and delivered messages in this JSON file across restarts
        #[arg(long, value_name = "FILE")]
        state: Option<std::path::PathBuf>,
    },
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::MockWechat {
        port,
        secret,
        appid,
        busy_share,
        http500_share,
        gateway_502_share,
        drop_share,
        latency_ms,
        token_ttl_s,
        default_credits,
        state,
    } = command;
    let config = MockConfig {
        appid,
        secret,
        token_ttl: std::time::Duration::from_secs(token_ttl_s),
        faults: Faults {
            busy_share,
            http500_share,
            latency_ms,
            drop_share,
            gateway_502_share,
        },
        default_credits,
        ..MockConfig::default()
    };
    let mock =
        MockWechat::start(config, std::net::SocketAddr::from(([127, 0, 0, 1], port))).await?;
    if let Some(path) = &state
        && path.exists()
    {
        let text = std::fs::read_to_string(path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        mock.restore(&value)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    println!(
        "mock WeChat API listening on {} (admin: POST /admin/credits, GET /admin/delivered)",
        mock.api_base()
    );
    let save = |mock: &MockWechat| -> anyhow::Result<()> {
        if let Some(path) = &state {
            let aside = path.with_extension("tmp");
            std::fs::write(&aside, mock.state().to_string())?;
            std::fs::rename(&aside, path)?;
        }
        Ok(())
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => save(&mock)?,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    save(&mock)?;
    Ok(ExitCode::SUCCESS)
}
