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
        /// Share of sends answered HTTP 500
        #[arg(long, default_value_t = 0.0)]
        http500_share: f64,
        /// Added latency per send, in milliseconds
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Token lifetime in seconds
        #[arg(long, default_value_t = 7_200)]
        token_ttl_s: u64,
        /// Credits every (openid, template) starts with
        #[arg(long, default_value_t = 0)]
        default_credits: i64,
    },
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::MockWechat {
        port,
        secret,
        appid,
        busy_share,
        http500_share,
        latency_ms,
        token_ttl_s,
        default_credits,
    } = command;
    let config = MockConfig {
        appid,
        secret,
        token_ttl: std::time::Duration::from_secs(token_ttl_s),
        faults: Faults {
            busy_share,
            http500_share,
            latency_ms,
            drop_share: 0.0,
        },
        default_credits,
        ..MockConfig::default()
    };
    let mock =
        MockWechat::start(config, std::net::SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!(
        "mock WeChat API listening on {} (admin: POST /admin/credits, GET /admin/delivered)",
        mock.api_base()
    );
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}
