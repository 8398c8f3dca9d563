//! `nudge stats`: what the store holds (events, users, date range, segments, credits).

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::Result;
use crate::store::{CreditSummary, Store, segments};

/// A summary of the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub events: u64,
    pub users: u64,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
    pub segments: u64,
    /// The oldest UTC day folder kept (`YYYY-MM-DD`): where `[retention] events_days` has cut.
    pub first_day: Option<String>,
    /// Events per name, most frequent first.
    pub by_event: Vec<(String, u64)>,
    /// `notification_click` events without a send id (clicks the app could not attribute).
    pub unattributed_clicks: u64,
    pub credits: Vec<CreditSummary>,
}

/// Computes the summary with one scan over the committed segments.
pub async fn collect(store: &Store) -> Result<Stats> {
    let credits = store.credits_by_template().await?;
    let scanned = store
        .read_segment_paths(None, |paths| async move {
            let scanned = tokio::task::block_in_place(|| scan(&paths))?;
            Ok((paths.len() as u64, scanned))
        })
        .await?;
    let mut stats = Stats {
        credits,
        ..Stats::default()
    };
    let Some((segments, (totals, by_event, clicks))) = scanned else {
        return Ok(stats);
    };
    stats.segments = segments;
    stats.first_day = store.first_day().await?;
    stats.unattributed_clicks = clicks
        .column("props")?
        .str()?
        .iter()
        .filter(|props| crate::event::send_id_absent(*props))
        .count() as u64;
    let number = |name: &str| -> Result<i64> {
        let column = totals.column(name)?.cast(&DataType::Int64)?;
        Ok(column.i64()?.get(0).unwrap_or_default())
    };
    stats.events = number("events")? as u64;
    stats.users = number("users")? as u64;
    stats.first = DateTime::from_timestamp_millis(number("first")?);
    stats.last = DateTime::from_timestamp_millis(number("last")?);
    let names = by_event.column("event")?.str()?.clone();
    let counts = by_event.column("count")?.cast(&DataType::Int64)?;
    stats.by_event = names
        .iter()
        .zip(counts.i64()?.iter())
        .map(|(name, count)| {
            (
                name.unwrap_or_default().to_string(),
                count.unwrap_or_default() as u64,
            )
        })
        .collect();
    Ok(stats)
}

/// The totals, the counts by event name and the clicks' props, over `paths`, in one scan.
fn scan(paths: &[std::path::PathBuf]) -> Result<(DataFrame, DataFrame, DataFrame)> {
    let events = segments::scan(paths)?;
    let totals = events.clone().select([
        len().alias("events"),
        col("user_id").n_unique().alias("users"),
        col("ts").min().alias("first"),
        col("ts").max().alias("last"),
    ]);
    let clicks = events
        .clone()
        .filter(col("event").eq(lit(crate::event::NOTIFICATION_CLICK)))
        .select([col("props")]);
    let by_event = events.group_by([col("event")]).agg([len().alias("count")]);
    let mut frames = segments::collect_all(vec![totals, by_event, clicks])?.into_iter();
    let (Some(totals), Some(by_event), Some(clicks)) =
        (frames.next(), frames.next(), frames.next())
    else {
        return Err(crate::Error::Segments(
            "the stats scan returned too few frames".into(),
        ));
    };
    let by_event = by_event.sort(
        ["count"],
        SortMultipleOptions::default().with_order_descending(true),
    )?;
    Ok((totals, by_event, clicks))
}
