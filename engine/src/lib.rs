//! The nudge engine: events in, well-timed notifications out.
//!
//! The modules follow the pipeline: [`ingest`] validates behaviour events and hands them, as an
//! [`batch::EventBatch`], to the [`store`] (Parquet segments for events, SQL for state);
//! [`windows`] learns each user's active hours from the segments and [`features`] computes the
//! facts a rule reads; [`campaign`] plans sends (run by [`schedule`] on cron) into the outbox,
//! which [`dispatch`] delivers through the connectors. [`synth`] makes synthetic datasets to
//! feed it, and [`stats`] reports what is stored.

pub mod batch;
pub mod campaign;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod duties;
pub mod error;
pub mod event;
pub mod features;
pub mod ingest;
pub mod inspect;
pub mod leader;
pub mod links;
pub mod mix;
pub mod privacy;
pub mod quiet;
pub mod rates;
pub mod schedule;
pub mod service;
pub mod stats;
pub mod store;
pub mod synth;
pub mod time;
pub mod users;
pub mod windows;

pub use error::{Error, Result};
