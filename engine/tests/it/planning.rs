//! Planning, property-tested (#36): for random users, caps, quiet hours, priorities, dedup keys
//! and run instants, campaigns planned into a real store never put a send inside its campaign's
//! quiet hours, never over a cap in any rolling day or week, and never leave two live sends with
//! one dedup key.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use nudge_engine::campaign::plan::Caps;
use nudge_engine::campaign::run::Run;
use nudge_engine::campaign::{Campaign, Delivery, Mode};
use proptest::prelude::*;

use super::support::{HOUR, NOV_1, TestStore};

const DAY: i64 = 24 * HOUR;

/// Zones with DST both ways, half- and quarter-hour offsets, and one without DST.
const ZONES: [&str; 6] = [
    "Asia/Shanghai",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/St_Johns",
];

#[derive(Debug, Clone)]
struct User {
    zone: &'static str,
    credits: u32,
}

#[derive(Debug, Clone)]
struct Plan {
    priority: i64,
    mode: Mode,
    local_time: String,
    quiet: Option<[u32; 2]>,
    /// `None`: the default `{campaign}:{user}:{run}`.
    dedup: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct World {
    users: Vec<User>,
    caps: Caps,
    campaigns: Vec<Plan>,
    /// (campaign index, run instant in hours after the start), in the order they run.
    runs: Vec<(usize, i64)>,
}

fn user() -> impl Strategy<Value = User> {
    (0..ZONES.len(), 1u32..4).prop_map(|(zone, credits)| User {
        zone: ZONES[zone],
        credits,
    })
}

fn campaign() -> impl Strategy<Value = Plan> {
    let mode = prop_oneof![
        Just(Mode::Immediate),
        Just(Mode::LocalTime),
        Just(Mode::BestTime)
    ];
    let quiet = prop_oneof![
        1 => Just(None),
        3 => (0u32..24, 1u32..23).prop_map(|(start, len)| Some([start, (start + len) % 24])),
    ];
    let dedup = prop_oneof![
        Just(None),
        Just(Some("{campaign}:{user}")),
        Just(Some("shared:{user}")),
    ];
    (0i64..3, mode, 0u32..24, 0u32..60, quiet, dedup).prop_map(
        |(priority, mode, hour, minute, quiet, dedup)| Plan {
            priority,
            mode,
            local_time: format!("{hour:02}:{minute:02}"),
            quiet,
            dedup,
        },
    )
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(user(), 1..8),
        (1u32..4, 0u32..5),
        prop::collection::vec(campaign(), 1..4),
        // Instants on a coarse grid, so runs repeat an instant (a re-run) as well as move on.
        prop::collection::vec((0usize..4, 0i64..16), 1..8),
    )
        .prop_map(|(users, (per_day, more), campaigns, runs)| {
            let mut runs: Vec<(usize, i64)> = runs
                .into_iter()
                .map(|(c, slot)| (c % campaigns.len(), slot * 9))
                .collect();
            runs.sort_by_key(|(_, at)| *at);
            World {
                users,
                caps: Caps {
                    per_day,
                    per_week: per_day + more,
                },
                campaigns,
                runs,
            }
        })
}

/// Whether local `hour:minute` lies in quiet hours `[start, end)` (wrapping past midnight).
fn in_quiet(hour: u32, minute: u32, [start, end]: [u32; 2]) -> bool {
    let at = hour * 60 + minute;
    let (start, end) = (start * 60, end * 60);
    if start < end {
        (start..end).contains(&at)
    } else {
        at >= start || at < end
    }
}

/// A live send, as the property reads it back from the store.
#[derive(Debug)]
struct Live {
    user: String,
    campaign: String,
    at_ms: i64,
    dedup_key: String,
}

async fn plan_world(world: &World) -> Vec<Live> {
    let test = TestStore::new().await;
    let start = NOV_1 + 10 * DAY;
    let accept = r#"{"template_id":"t","status":"accept"}"#;
    let mut events = Vec::new();
    for (i, user) in world.users.iter().enumerate() {
        for credit in 0..user.credits {
            events.push(format!(
                r#"{{"user_id":"u{i}","event":"subscription","ts":{},"tz":"{}","props":{accept}}}"#,
                start - 2 * DAY + i64::from(credit),
                user.zone
            ));
        }
        events.push(format!(
            r#"{{"user_id":"u{i}","event":"app_open","ts":{},"tz":"{}"}}"#,
            start - DAY + (i as i64) * 7 * HOUR % DAY,
            user.zone
        ));
    }
    let report = test
        .ingest(&[&test.file("e.ndjson", events.join("\n"))])
        .await;
    assert_eq!(report.rejected(), 0, "{:?}", test.rejects());
    let rule = test.everyone();
    let mut settings = test.config().run_settings();
    settings.caps = world.caps;
    let campaigns: Vec<Campaign> = world
        .campaigns
        .iter()
        .enumerate()
        .map(|(i, plan)| Campaign {
            template: "t".into(),
            priority: plan.priority,
            delivery: Delivery {
                mode: plan.mode,
                local_time: plan.local_time.clone(),
                quiet_hours: plan.quiet,
                ..Delivery::default()
            },
            dedup_key: plan.dedup.map(String::from),
            ..super::support::campaign(&format!("c{i}"), rule.clone())
        })
        .collect();
    for (campaign, hours) in &world.runs {
        let at = DateTime::<Utc>::from_timestamp_millis(start + hours * HOUR).unwrap();
        nudge_engine::campaign::run::run(
            &test.store,
            &settings,
            &campaigns[*campaign],
            Run::at(at, at),
        )
        .await
        .unwrap();
    }
    let history = test
        .store
        .send_history("none", start - 30 * DAY, start + 60 * DAY)
        .await
        .unwrap();
    let mut live: Vec<Live> = history
        .into_iter()
        .flat_map(|(user, (_, sends))| {
            sends.into_iter().map(move |send| Live {
                user: user.clone(),
                campaign: send.campaign,
                at_ms: send.send_at_ms,
                dedup_key: send.dedup_key,
            })
        })
        .collect();
    live.sort_by(|a, b| (&a.user, a.at_ms).cmp(&(&b.user, b.at_ms)));
    live
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn planned_sends_keep_out_of_quiet_hours_under_the_caps_and_once_per_dedup_key(world in world()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let live = runtime.block_on(plan_world(&world));

        // One live send per dedup key.
        let mut keys = BTreeMap::new();
        for send in &live {
            prop_assert!(
                keys.insert(send.dedup_key.clone(), send.at_ms).is_none(),
                "two live sends with key {}: {live:?}", send.dedup_key
            );
        }
        for send in &live {
            let index: usize = send.user[1..].parse().unwrap();
            let zone: Tz = world.users[index].zone.parse().unwrap();
            let campaign: usize = send.campaign[1..].parse().unwrap();
            // Out of its campaign's quiet hours, in the user's zone.
            if let Some(quiet) = world.campaigns[campaign].quiet {
                let local = DateTime::<Utc>::from_timestamp_millis(send.at_ms).unwrap().with_timezone(&zone);
                prop_assert!(
                    !in_quiet(local.hour(), local.minute(), quiet),
                    "{send:?} lands at {local} inside quiet hours {quiet:?}"
                );
            }
            // No rolling day or week starting at this send holds more than its cap.
            let mine = live.iter().filter(|other| other.user == send.user);
            let within = |span: i64| {
                mine.clone()
                    .filter(|other| other.at_ms >= send.at_ms && other.at_ms - send.at_ms < span)
                    .count() as u32
            };
            prop_assert!(within(DAY) <= world.caps.per_day, "day cap {:?} broken at {send:?}: {live:?}", world.caps);
            prop_assert!(within(7 * DAY) <= world.caps.per_week, "week cap {:?} broken at {send:?}: {live:?}", world.caps);
        }
        // Every user has a credit and the first run has nothing to respect but quiet hours,
        // so something is planned: a world where nothing is ever sent would pass every check.
        prop_assert!(!live.is_empty(), "nothing planned for {world:?}");
    }
}
