//! When a campaign runs: its `[schedule]`, a cron expression in a zone or a one-off instant,
//! parsed when the campaign file is read, and the instants it names in a span of time.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

/// A campaign's `[schedule]`: a cron expression in a zone, or a one-off instant, parsed when the
/// campaign file is read (a bad value is a load error naming the file, line and key).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Six fields with seconds: `0 0 10 * * *` is 10:00:00 every day.
    pub cron: Option<Cron>,
    /// The zone the cron expression is read in [default: the configured default zone].
    #[serde(default, deserialize_with = "crate::time::deserialize_optional_zone")]
    pub tz: Option<Tz>,
    /// A one-off run, RFC 3339 (any offset).
    #[serde(default, deserialize_with = "instant")]
    pub at: Option<DateTime<Utc>>,
}

/// A parsed cron expression (six fields, with seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Cron(cron::Schedule);

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(expression: &str) -> std::result::Result<Self, String> {
        cron::Schedule::from_str(expression)
            .map(Cron)
            .map_err(|error| {
                format!("'{expression}': {error} (six fields: sec min hour day month weekday)")
            })
    }
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn instant<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|at| Some(at.with_timezone(&Utc)))
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "'{text}' is not an RFC 3339 instant (e.g. 2026-11-01T10:00:00+08:00)"
            ))
        })
}

impl ScheduleConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        match (&self.cron, &self.at) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("schedule needs exactly one of cron or at".into()),
        }
    }

    /// Scheduled instants in `(after, until]`, cron evaluated in its zone (DST-correct).
    pub fn instants(
        &self,
        default_zone: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        self.instants_noted(default_zone, after, until)
            .into_iter()
            .map(|(at, _)| at)
            .collect()
    }

    /// [`instants`](Self::instants), each with a note when DST moved it. The cron expression is
    /// matched against local wall-clock times, and each matching local time runs once: a time
    /// the clocks pass twice (going back) runs at its first occurrence; a time they skip (going
    /// forward) runs at the first instant after the gap, noted.
    pub fn instants_noted(
        &self,
        default_zone: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Option<String>)> {
        if let Some(at) = self.at {
            return if at > after && at <= until {
                vec![(at, None)]
            } else {
                Vec::new()
            };
        }
        let Some(Cron(schedule)) = &self.cron else {
            return Vec::new();
        };
        let zone = self.tz.unwrap_or(default_zone);
        // Wall-clock times, carried as if UTC, from a few hours before `after` (a local time
        // moved by a gap lands later than it reads) to a few hours past `until`.
        let wall = |t: DateTime<Utc>| t.with_timezone(&zone).naive_local().and_utc();
        let margin = Duration::hours(3);
        let last_wall = wall(until) + margin;
        let mut out: Vec<(DateTime<Utc>, Option<String>)> = Vec::new();
        for local in schedule
            .after(&(wall(after) - margin))
            .take_while(|local| *local <= last_wall)
            .take(20_000)
        {
            let naive = local.naive_utc();
            let (at, note) = match zone.from_local_datetime(&naive) {
                LocalResult::Single(t) => (t.with_timezone(&Utc), None),
                LocalResult::Ambiguous(first, _) => (first.with_timezone(&Utc), None),
                LocalResult::None => {
                    let Some(moved) = (1..=240).find_map(|minutes| {
                        zone.from_local_datetime(&(naive + Duration::minutes(minutes)))
                            .earliest()
                    }) else {
                        continue;
                    };
                    let note = format!(
                        "{naive} does not exist in {zone} (clocks go forward); run at {}",
                        moved.naive_local()
                    );
                    (moved.with_timezone(&Utc), Some(note))
                }
            };
            // A gap can move several wall-clock times onto one instant: it runs once.
            if at <= after || at > until || out.last().is_some_and(|(seen, _)| *seen == at) {
                continue;
            }
            out.push((at, note));
        }
        out
    }
}

#[cfg(test)]
mod properties {
    //! Generated zones, years and daily times against the cron instants: strictly increasing,
    //! one run a local day (a repeated hour once, a skipped one after the gap, noted).

    use chrono::{NaiveDate, NaiveTime, Timelike};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_daily_cron_runs_once_a_local_day_in_any_zone_and_year(
            zone in proptest::sample::select(chrono_tz::TZ_VARIANTS.to_vec()),
            year in 1990i32..2037,
            day_of_year in 1u32..360,
            hour in 0u32..24,
            minute in prop_oneof![Just(0u32), Just(30), 0u32..60],
            days in 1i64..20,
        ) {
            let first = NaiveDate::from_yo_opt(year, day_of_year).unwrap();
            let midnight = |date: NaiveDate| zone.from_local_datetime(&date.and_time(NaiveTime::MIN)).earliest();
            let (Some(after), Some(until)) = (midnight(first), midnight(first + Duration::days(days))) else {
                return Ok(()); // a midnight the clocks skip: the window has no clean edge
            };
            let schedule = ScheduleConfig {
                cron: Some(format!("0 {minute} {hour} * * *").parse().unwrap()),
                tz: Some(zone),
                at: None,
            };
            let instants = schedule.instants_noted(zone, after.with_timezone(&Utc), until.with_timezone(&Utc));
            for pair in instants.windows(2) {
                prop_assert!(pair[0].0 < pair[1].0, "{zone}: not increasing: {pair:?}");
            }
            for (at, note) in &instants {
                let local = at.with_timezone(&zone);
                let wanted = (hour, minute);
                let read = (local.hour(), local.minute());
                if note.is_some() {
                    prop_assert!(read > wanted || local.date_naive() > first, "{zone} {at}: moved back: {note:?}");
                } else {
                    prop_assert_eq!(read, wanted, "{} {}: at another time with no note", zone, at);
                }
            }
            // One a local day, each run counted on the day it was scheduled for: a time skipped
            // late in the evening runs after the gap, which may be past midnight (Nuuk moves its
            // clocks at 23:00 on a Saturday), and that run is still the day before's. The days
            // that exist (a zone may skip a whole day).
            let existing = (0..days)
                .filter(|d| {
                    let date = first + Duration::days(*d);
                    zone.from_local_datetime(&date.and_hms_opt(12, 0, 0).unwrap()).earliest().is_some()
                })
                .count();
            let wanted_time = NaiveTime::from_hms_opt(hour, minute, 0).unwrap();
            let scheduled = |at: &DateTime<Utc>| {
                let local = at.with_timezone(&zone).naive_local();
                match local.time() >= wanted_time {
                    true => local.date(),
                    false => local.date() - Duration::days(1),
                }
            };
            let mut dates: Vec<NaiveDate> = instants.iter().map(|(at, _)| scheduled(at)).collect();
            dates.dedup();
            prop_assert_eq!(dates.len(), instants.len(), "{} ran twice on a day: {:?}", zone, instants);
            prop_assert_eq!(instants.len(), existing, "{} from {}: {:?}", zone, first, instants);
        }
    }
}
