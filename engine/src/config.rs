//! `nudge.toml`: where data lives and how each stage behaves, with defaults that need no file.

use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::Deserialize;

pub mod server;

use crate::{Error, Result};

/// The file looked for in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "nudge.toml";

/// Environment variable that overrides `database_url` (it may hold a password).
pub const DATABASE_URL_ENV: &str = "NUDGE_DATABASE_URL";

pub use nudge_connectors::DRY_RUN;

/// The whole configuration. Every key is optional; unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the event segments, the SQLite file and reject files.
    pub data_dir: PathBuf,
    /// SQL store location. Default: `sqlite://<data_dir>/nudge.db`.
    pub database_url: Option<String>,
    /// IANA zone used for users whose zone is unknown.
    #[serde(deserialize_with = "crate::time::deserialize_zone")]
    pub default_tz: Tz,
    pub ingest: IngestConfig,
    /// Limits of rule scripts (`[rules]`).
    pub rules: nudge_rules::Limits,
    /// Active time windows (`[windows]`).
    pub windows: crate::windows::WindowsConfig,
    /// Global frequency caps across campaigns (`[caps]`).
    pub caps: crate::campaign::plan::Caps,
    /// Where campaign files live.
    pub campaigns_dir: PathBuf,
    /// Delivery pacing, leases and retries (`[dispatch]`).
    pub dispatch: crate::dispatch::DispatchConfig,
    /// Named connectors (`[connectors.NAME]`, `type = "wechat" | "webhook" | "file"`). Without
    /// any, sends go to the `dry-run` file connector (`<data_dir>/dry-run-sends.ndjson`).
    pub connectors: std::collections::BTreeMap<String, nudge_connectors::ConnectorConfig>,
    /// The HTTP service of `nudge serve` (`[server]`).
    pub server: server::ServerConfig,
    /// The web console (`[console]`).
    pub console: ConsoleConfig,
    /// How long events are kept (`[retention]`).
    pub retention: RetentionConfig,
}

/// The `[retention]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Events (and rejects files) older than this many days are deleted: whole UTC days, by
    /// `serve`'s leader with its compaction and by `nudge compact --retention` [default: kept].
    pub events_days: Option<u32>,
}

/// The web console's settings (`[console]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// User ids a campaign's test send may go to (the team's own accounts): a test send is a
    /// real message, so nobody else can be picked from the console.
    pub test_users: Vec<String>,
}

/// The `[ingest]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Records per committed batch: the unit of atomicity and the bound on memory.
    pub batch_size: usize,
    /// Longest text record (an NDJSON line, a CSV row) in bytes; a longer one is rejected as
    /// `record_too_long` without being held in memory.
    pub max_record_bytes: usize,
    /// Memory for the stored event ids the duplicate check keeps (~10 bytes an id). Past it,
    /// the days least in use are dropped and read again from their segments when next touched.
    pub id_cache_mib: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("nudge-data"),
            database_url: None,
            default_tz: chrono_tz::Asia::Shanghai,
            ingest: IngestConfig::default(),
            rules: nudge_rules::Limits::default(),
            windows: crate::windows::WindowsConfig::default(),
            caps: crate::campaign::plan::Caps::default(),
            campaigns_dir: PathBuf::from("campaigns"),
            dispatch: crate::dispatch::DispatchConfig::default(),
            connectors: std::collections::BTreeMap::new(),
            server: server::ServerConfig::default(),
            console: ConsoleConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            batch_size: 500_000,
            max_record_bytes: 1 << 20,
            id_cache_mib: crate::store::DEFAULT_ID_CACHE_MIB,
        }
    }
}

impl Config {
    /// Loads `explicit`, or `nudge.toml` in the working directory if present, or the defaults.
    /// Relative paths in a file are relative to the file's directory.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let path = match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.exists()),
        };
        let Some(path) = path else {
            let config = Config::default();
            config.validate("(defaults)")?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::io(&path, source))?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        if let Some(base) = path.parent().filter(|base| !base.as_os_str().is_empty()) {
            if config.data_dir.is_relative() {
                config.data_dir = base.join(&config.data_dir);
            }
            if config.campaigns_dir.is_relative() {
                config.campaigns_dir = base.join(&config.campaigns_dir);
            }
        }
        Ok(config)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|error| Error::Config {
            path: origin.to_string(),
            message: error.to_string().trim_end().to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let invalid = |message: String| Error::Config {
            path: origin.to_string(),
            message,
        };
        self.windows.validate().map_err(invalid)?;
        if self.retention.events_days == Some(0) {
            return Err(invalid(
                "retention.events_days = 0 would delete every event: give 1 or more days, or leave it out to keep them".into(),
            ));
        }
        for (name, connector) in &self.connectors {
            connector
                .validate()
                .map_err(|message| invalid(format!("connectors.{name}: {message}")))?;
        }
        if self.ingest.batch_size == 0 {
            return Err(invalid("ingest.batch_size must be at least 1".to_string()));
        }
        if self.ingest.max_record_bytes < 64 {
            return Err(invalid(
                "ingest.max_record_bytes must be at least 64".to_string(),
            ));
        }
        self.rules.validate().map_err(&invalid)?;
        self.dispatch.validate().map_err(&invalid)?;
        self.server.validate().map_err(&invalid)?;
        Ok(())
    }

    /// The connectors to dispatch through, built (secrets read from the environment).
    pub fn build_connectors(
        &self,
    ) -> Result<std::collections::BTreeMap<String, std::sync::Arc<dyn nudge_connectors::Connector>>>
    {
        let mut built = std::collections::BTreeMap::new();
        for (name, config) in &self.connectors {
            let connector = nudge_connectors::build(config).map_err(|message| Error::Config {
                path: format!("[connectors.{name}]"),
                message,
            })?;
            built.insert(name.clone(), std::sync::Arc::from(connector));
        }
        if !built.contains_key(DRY_RUN) {
            let dry_run =
                nudge_connectors::ConnectorConfig::File(nudge_connectors::config::FileConfig {
                    path: self.data_dir.join("dry-run-sends.ndjson"),
                });
            let connector = nudge_connectors::build(&dry_run).map_err(|message| Error::Config {
                path: format!("[connectors.{DRY_RUN}]"),
                message,
            })?;
            built.insert(DRY_RUN.to_string(), std::sync::Arc::from(connector));
        }
        Ok(built)
    }

    /// The SQL store's URL: `NUDGE_DATABASE_URL` when set (so a PostgreSQL password need not be
    /// written in nudge.toml), else `database_url`, else the SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        if let Some(url) = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|url| !url.is_empty())
        {
            return url;
        }
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("nudge.db").display()),
        }
    }

    /// What planning a campaign run needs of this configuration.
    pub fn run_settings(&self) -> crate::campaign::run::RunSettings {
        crate::campaign::run::RunSettings {
            rules: self.rules,
            default_tz: self.default_tz,
            caps: self.caps,
            checks: self
                .connectors
                .iter()
                .map(|(name, connector)| (name.clone(), connector.checks()))
                .collect(),
        }
    }

    /// What opening the store needs of this configuration.
    pub fn store(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url(),
            id_cache_bytes: self.ingest.id_cache_mib.saturating_mul(1 << 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_gives_usable_defaults() {
        let config = Config::parse("", "nudge.toml").unwrap();
        assert_eq!(config.data_dir, PathBuf::from("nudge-data"));
        assert_eq!(config.default_tz, chrono_tz::Asia::Shanghai);
        assert_eq!(config.database_url(), "sqlite://nudge-data/nudge.db");
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let error = Config::parse("data_dri = 'x'\n", "conf/nudge.toml")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("config conf/nudge.toml:"), "{error}");
        assert!(error.contains("data_dri"), "{error}");

        let error = Config::parse("[ingest]\nbatch = 3\n", "nudge.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("batch"), "{error}");
    }

    #[test]
    fn a_bad_default_zone_is_reported() {
        let error = Config::parse("default_tz = 'Mars/Olympus'", "nudge.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("'Mars/Olympus' is not an IANA time zone")
                && error.contains("default_tz")
                && error.contains("line 1"),
            "{error}"
        );
    }
}
