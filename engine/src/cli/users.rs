//! `nudge users`: exporting what nudge holds about a user, and forgetting them.

use std::path::PathBuf;
use std::process::ExitCode;

use nudge_engine::store::Store;

use super::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Forget users everywhere: their events, profile, credits, windows, planned sends (cancelled),
    /// their lines in rejects and dry-run files; their finished sends are kept under a keyed hash.
    /// Events naming them later are refused
    Forget(ForgetArgs),
    /// Everything nudge holds about a user as one JSON document: events, profile, credits and
    /// their history, window, sends with their rendered messages and delivery results
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The user id
    id: String,
    /// Where to write it (- for standard output)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// User ids
    ids: Vec<String>,
    /// Also the ids in this file, one a line (blank lines and lines starting with # skipped)
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Who asked, for the record (the ids are not recorded) [default: the login name]
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

pub async fn run(context: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Forget(args) => forget(context, args).await,
        Command::Export(args) => export(context, args).await,
    }
}

async fn export(context: &Context, args: ExportArgs) -> anyhow::Result<ExitCode> {
    use nudge_engine::privacy::export;
    let store = Store::open(&context.config.store()).await?;
    let read = export::read(&store, &args.id, chrono::Utc::now()).await?;
    if read.is_empty() {
        anyhow::bail!(
            "nudge holds nothing about user '{}' (ids are case-sensitive); nothing written",
            args.id
        );
    }
    if args.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        export::write(&read, &mut std::io::BufWriter::new(stdout.lock()))?;
    } else {
        let file = std::fs::File::create(&args.out)
            .map_err(|error| anyhow::anyhow!("{}: {error}", args.out.display()))?;
        export::write(&read, &mut std::io::BufWriter::new(file))?;
        if !context.quiet {
            eprintln!(
                "exported user '{}' to {}: {} events, {} sends, {} credits ({} changes)",
                args.id,
                args.out.display(),
                read.events.len(),
                read.records.sends.len(),
                read.records.credits.len(),
                read.records.credit_history.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn forget(context: &Context, args: ForgetArgs) -> anyhow::Result<ExitCode> {
    let mut ids = args.ids;
    if let Some(path) = &args.from {
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        ids.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_string),
        );
    }
    if ids.iter().all(|id| id.trim().is_empty()) {
        anyhow::bail!("no user ids: give them as arguments or with --from FILE");
    }
    let by = args
        .by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".to_string());
    let store = Store::open(&context.config.store()).await?;
    let done =
        nudge_engine::privacy::forget(&store, &context.config, &ids, &format!("cli:{by}")).await?;
    println!(
        "forgot {} users: {} events from {} segment files, {} profile/credit rows, {} planned sends cancelled, {} sends kept under a hash, {} windows, {} lines in {} files",
        done.store.users,
        done.store.events,
        done.store.files,
        done.store.state_rows,
        done.store.sends_cancelled,
        done.store.sends_anonymised,
        done.store.windows,
        done.files.lines,
        done.files.files
    );
    if !done.store.log_emptied {
        println!(
            "note: readers kept the SQLite log busy, so the deleted rows' old pages stay in `nudge.db-wal` until its next checkpoint (run this again when the service is quiet to empty it)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
