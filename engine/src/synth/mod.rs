//! Synthetic event datasets: realistic users with latent weekly rhythms, deterministic per seed.
//!
//! Users are generated in blocks on all cores (each user has its own seeded generator, so the
//! output does not depend on the thread count) and written in order.

pub mod family;
pub mod rhythm;
pub mod user;
mod write;

use std::path::PathBuf;

use chrono::NaiveDate;
use rayon::prelude::*;

pub use family::Family;
pub use write::OutputFormat;

use crate::{Error, Result};

/// Users generated together (one unit of parallel work).
const BLOCK_USERS: u64 = 2_048;

/// What `nudge gen events` was asked for.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub users: u64,
    pub days: u32,
    pub seed: u64,
    /// The kind of behaviour the users follow.
    pub family: Family,
    /// First local day of the window.
    pub start: NaiveDate,
    pub out: PathBuf,
    /// Where to write each user's latent profile (`.csv` or `.parquet`).
    pub truth: Option<PathBuf>,
    pub quiet: bool,
}

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenSummary {
    pub users: u64,
    pub events: u64,
    /// Users with fewer than 10 events.
    pub sparse_users: u64,
    pub max_user_events: u64,
}

/// Generates the dataset and writes it (and the truth, if asked). Users are simulated in
/// parallel, a wave of blocks at a time, while a writer thread writes the wave before in order,
/// so generating and encoding overlap.
pub fn generate(options: &GenOptions) -> Result<GenSummary> {
    let events_out = write::EventsWriter::create(&options.out)?;
    let truth_out = options
        .truth
        .as_deref()
        .map(write::TruthWriter::create)
        .transpose()?;
    let progress = if options.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(options.users)
    };
    let wave = rayon::current_num_threads().max(1) * 2;
    // Half a wave waits for the writer while the next wave is generated, so memory stays near
    // two waves' worth of users.
    let (sender, blocks_in) = std::sync::mpsc::sync_channel::<Vec<user::SyntheticUser>>(wave / 2);
    let writer = {
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("nudge-gen-writer".into())
            .spawn(move || write_blocks(blocks_in, events_out, truth_out, &progress))
            .map_err(|source| Error::io(&options.out, source))?
    };
    let mut summary = GenSummary::default();
    let blocks: Vec<u64> = (0..options.users.div_ceil(BLOCK_USERS)).collect();
    'waves: for wave_blocks in blocks.chunks(wave) {
        let generated: Vec<Vec<user::SyntheticUser>> = wave_blocks
            .par_iter()
            .map(|block| {
                let first = block * BLOCK_USERS;
                let last = (first + BLOCK_USERS).min(options.users);
                (first..last)
                    .map(|index| {
                        user::simulate(
                            options.family,
                            options.seed,
                            index,
                            options.start,
                            options.days,
                        )
                    })
                    .collect()
            })
            .collect();
        for block in generated {
            for user in &block {
                let count = user.events.len() as u64;
                summary.users += 1;
                summary.events += count;
                summary.sparse_users += u64::from(count < 10);
                summary.max_user_events = summary.max_user_events.max(count);
            }
            if sender.send(block).is_err() {
                // The writer stopped on an error, which its join returns.
                break 'waves;
            }
        }
    }
    drop(sender);
    writer.join().map_err(|_| Error::Input {
        path: options.out.clone(),
        message: "the writer thread panicked".into(),
    })??;
    progress.finish_and_clear();
    Ok(summary)
}

/// Writes the blocks in the order they arrive, each block's events in time order.
fn write_blocks(
    blocks: std::sync::mpsc::Receiver<Vec<user::SyntheticUser>>,
    mut events_out: write::EventsWriter,
    mut truth_out: Option<write::TruthWriter>,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    for block in blocks {
        let mut events: Vec<_> = block.iter().flat_map(|user| user.events.iter()).collect();
        events.sort_by_key(|event| event.ts_ms);
        events_out.write_block(&events)?;
        if let Some(truth) = &mut truth_out {
            truth.write_block(&block)?;
        }
        progress.inc(block.len() as u64);
    }
    events_out.finish()?;
    if let Some(truth) = truth_out {
        truth.finish()?;
    }
    Ok(())
}
