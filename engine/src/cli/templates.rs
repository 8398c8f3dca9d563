//! `nudge templates`: the account's subscription templates and their keyword types.

use std::process::ExitCode;

use anyhow::Context as _;
use nudge_connectors::ConnectorConfig;
use nudge_connectors::wechat::client::WechatConnector;
use nudge_engine::store::{Store, TemplateRow};

use super::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Fetch the account's templates (gettemplate) and store their keywords
    Sync {
        /// The wechat connector to use [default: the only one configured]
        #[arg(long, value_name = "NAME")]
        connector: Option<String>,
    },
    /// List the stored templates
    List,
}

pub async fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let store = Store::open(&context.config.store()).await?;
    match command {
        Command::Sync { connector } => {
            let wechat: Vec<_> = context
                .config
                .connectors
                .iter()
                .filter_map(|(name, config)| match config {
                    ConnectorConfig::Wechat(wechat) => Some((name, wechat)),
                    _ => None,
                })
                .filter(|(name, _)| {
                    connector
                        .as_deref()
                        .is_none_or(|wanted| wanted == name.as_str())
                })
                .collect();
            let [(name, config)] = wechat.as_slice() else {
                anyhow::bail!(
                    "name one wechat connector with --connector (configured: {})",
                    wechat.len()
                );
            };
            let client = WechatConnector::new(config).map_err(anyhow::Error::msg)?;
            let templates = client
                .templates()
                .await
                .with_context(|| format!("connector {name}"))?;
            save(&store, &templates).await?;
            println!("{} templates synced from connector {name}", templates.len());
            print_list(&store).await?;
        }
        Command::List => print_list(&store).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores fetched templates as the registry campaigns are checked against.
pub async fn save(
    store: &Store,
    templates: &[nudge_connectors::wechat::templates::Template],
) -> anyhow::Result<()> {
    let rows: Vec<TemplateRow> = templates
        .iter()
        .map(|t| TemplateRow {
            id: t.id.clone(),
            title: t.title.clone(),
            kind: t.kind,
            keywords: t.keywords.clone(),
        })
        .collect();
    store
        .save_templates(&rows, chrono::Utc::now().timestamp_millis())
        .await?;
    Ok(())
}

async fn print_list(store: &Store) -> anyhow::Result<()> {
    let templates = store.templates().await?;
    if templates.is_empty() {
        println!("no templates: run `nudge templates sync`");
    }
    for TemplateRow {
        id,
        title,
        kind,
        keywords,
    } in templates
    {
        let list: Vec<String> = keywords
            .iter()
            .map(|(label, key)| format!("{key} ({label})"))
            .collect();
        println!(
            "{id}  {title}  [{}]  {}",
            if kind == 3 { "long-term" } else { "one-time" },
            list.join(", ")
        );
    }
    Ok(())
}
