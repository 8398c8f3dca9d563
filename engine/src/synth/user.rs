//! One synthetic user: zone, activity level, lifecycle, and the sessions that make their events.

use chrono::{Datelike, Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use super::family::Family;
use super::rhythm::{self, HOURS_OF_WEEK, Profile};
use crate::event::Event;

const CITIES: [&str; 8] = [
    "上海", "北京", "广州", "深圳", "杭州", "成都", "武汉", "南京",
];
/// Example one-time templates users subscribe to.
pub const TEMPLATES: [&str; 4] = [
    "tmpl_cart_reminder",
    "tmpl_order_shipped",
    "tmpl_daily_checkin",
    "tmpl_win_back",
];
/// Most sessions a user can have per day.
const MAX_SESSIONS_PER_DAY: f64 = 12.0;

/// Everything generated for one user.
pub struct SyntheticUser {
    pub user_id: String,
    pub zone: &'static str,
    pub profile: Profile,
    pub events: Vec<Event>,
}

/// Deterministic per-user generator state.
pub fn simulate(
    family: Family,
    seed: u64,
    index: u64,
    start: NaiveDate,
    days: u32,
) -> SyntheticUser {
    let mut rng = Pcg64::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let user_id = format!("u{index:07}");
    let zones = family.zones();
    let zone_weights: Vec<f64> = zones.iter().map(|(_, share)| *share).collect();
    let zone = zones[rhythm::pick(&mut rng, &zone_weights)].0;
    let tz: Tz = zone.parse().expect("zone table holds IANA names");
    let profile = family.draw(&mut rng);

    // Heavy-tailed activity: median about 0.08 sessions a day, a few users many a day.
    let rate = (0.08f64.ln() + 1.4 * rhythm::normal(&mut rng))
        .exp()
        .min(MAX_SESSIONS_PER_DAY);
    // Lifecycle: some users join during the window, some go silent before its end.
    let first_day = if rng.random_bool(0.3) {
        rng.random_range(0..days)
    } else {
        0
    };
    let last_day = if rng.random_bool(0.25) {
        rng.random_range(first_day..days) + 1
    } else {
        days
    };
    let active_days = (last_day - first_day) as f64;
    let sessions = poisson(&mut rng, rate * active_days).max(1);

    let cdf: Vec<f64> = profile
        .probabilities
        .iter()
        .scan(0.0, |sum, p| {
            *sum += p;
            Some(*sum)
        })
        .collect();
    let mut builder = EventBuilder {
        seed,
        index,
        user_id: &user_id,
        counter: 0,
        events: Vec::new(),
    };
    let mut starts: Vec<i64> = (0..sessions)
        .filter_map(|_| session_start(&mut rng, &cdf, &tz, start, first_day, last_day))
        .collect();
    if starts.is_empty() {
        // Every generated user has at least one session, even with a short active span.
        starts.extend(
            (0..100).find_map(|_| session_start(&mut rng, &cdf, &tz, start, first_day, last_day)),
        );
    }
    starts.sort_unstable();
    let subscribe_at = rng
        .random_bool(0.4)
        .then(|| rng.random_range(0..starts.len().max(1)));
    for (number, &at) in starts.iter().enumerate() {
        if number == 0 {
            let props = format!(
                r#"{{"city":"{}","vip_level":{},"tz":"{zone}"}}"#,
                CITIES[rng.random_range(0..CITIES.len())],
                rng.random_range(0..4)
            );
            builder.push("profile", at - 1_000, Some(props), Some(zone));
        }
        if family.bursts() {
            burst(&mut rng, &mut builder, at);
        } else {
            session(&mut rng, &mut builder, at);
        }
        if subscribe_at == Some(number) {
            subscribe(&mut rng, &mut builder, at + 90_000);
        }
    }
    let events = builder.events;
    SyntheticUser {
        user_id,
        zone,
        profile,
        events,
    }
}

/// A session start in UTC milliseconds: an hour of the week drawn from the profile, a matching
/// local day inside the user's active span, a uniform minute.
fn session_start(
    rng: &mut Pcg64,
    cdf: &[f64],
    tz: &Tz,
    start: NaiveDate,
    first_day: u32,
    last_day: u32,
) -> Option<i64> {
    let target: f64 = rng.random();
    let bin = cdf.partition_point(|c| *c < target).min(HOURS_OF_WEEK - 1);
    let (weekday, hour) = ((bin / 24) as u32, (bin % 24) as u32);
    let start_weekday = start.weekday().num_days_from_monday();
    let offset = (weekday + 7 - (start_weekday + first_day) % 7) % 7;
    let first_match = first_day + offset;
    if first_match >= last_day {
        return None;
    }
    let matches = (last_day - 1 - first_match) / 7 + 1;
    let day = first_match + 7 * rng.random_range(0..matches);
    let local = (start + Duration::days(day as i64)).and_hms_opt(
        hour,
        rng.random_range(0..60),
        rng.random_range(0..60),
    )?;
    let instant = tz.from_local_datetime(&local).earliest().or_else(|| {
        tz.from_local_datetime(&(local + Duration::hours(1)))
            .earliest()
    })?;
    Some(instant.timestamp_millis())
}

struct EventBuilder<'a> {
    seed: u64,
    index: u64,
    user_id: &'a str,
    counter: u32,
    events: Vec<Event>,
}

impl EventBuilder<'_> {
    fn push(&mut self, event: &str, ts_ms: i64, props: Option<String>, tz: Option<&str>) {
        self.counter += 1;
        self.events.push(Event {
            user_id: self.user_id.to_string(),
            event: event.to_string(),
            ts_ms,
            props,
            event_id: Some(format!("{:x}-{:x}-{}", self.seed, self.index, self.counter)),
            tz: tz.map(str::to_string),
        });
    }
}

/// A session: an open (or a click on a notification), page views, maybe a cart and a purchase.
fn session(rng: &mut Pcg64, builder: &mut EventBuilder<'_>, mut at: i64) {
    if rng.random_bool(0.05) {
        let send = format!(
            r#"{{"send_id":"s{:x}","campaign":"cart_abandonment"}}"#,
            rng.random::<u32>()
        );
        builder.push("notification_click", at, Some(send), None);
    } else {
        builder.push("app_open", at, None, None);
    }
    let item = rng.random_range(0..500);
    let price = 9.9 + (item % 50) as f64 * 10.0;
    let views = 1 + poisson(rng, 1.2);
    for _ in 0..views {
        at += rng.random_range(5_000..120_000);
        let props = format!(r#"{{"page":"pages/item/detail","item_id":"item-{item:03}"}}"#);
        builder.push("page_view", at, Some(props), None);
    }
    if rng.random_bool(0.15) {
        at += rng.random_range(5_000..60_000);
        let props = format!(
            r#"{{"item_id":"item-{item:03}","item_name":"商品{item}","price":{price:.1}}}"#
        );
        builder.push("add_to_cart", at, Some(props), None);
        if rng.random_bool(0.35) {
            at += rng.random_range(20_000..300_000);
            let props = format!(
                r#"{{"order_id":"o{:x}","item_id":"item-{item:03}","amount":{price:.1}}}"#,
                rng.random::<u32>()
            );
            builder.push("purchase", at, Some(props), None);
        }
    }
}

/// A session as a burst (the `sessions` family): 1 to 20 events, each 5 to 60 s after the one
/// before, in the order an app logs them: an open, page views, then maybe a cart and a purchase.
fn burst(rng: &mut Pcg64, builder: &mut EventBuilder<'_>, mut at: i64) {
    let events = rng.random_range(1..=20u32);
    builder.push("app_open", at, None, None);
    let item = rng.random_range(0..500);
    let buys = events >= 3 && rng.random_bool(0.3);
    let views = events - 1 - if buys { 2 } else { 0 };
    for view in 0..views {
        at += rng.random_range(5_000..60_000);
        let props = format!(
            r#"{{"page":"pages/item/detail","item_id":"item-{:03}"}}"#,
            (item + view) % 500
        );
        builder.push("page_view", at, Some(props), None);
    }
    if buys {
        at += rng.random_range(5_000..60_000);
        let props = format!(r#"{{"item_id":"item-{item:03}","price":19.9}}"#);
        builder.push("add_to_cart", at, Some(props.clone()), None);
        at += rng.random_range(5_000..60_000);
        let props = format!(
            r#"{{"order_id":"o{:x}","item_id":"item-{item:03}","amount":19.9}}"#,
            rng.random::<u32>()
        );
        builder.push("purchase", at, Some(props), None);
    }
}

/// A subscription popup answer: mostly accepts, some rejects.
fn subscribe(rng: &mut Pcg64, builder: &mut EventBuilder<'_>, at: i64) {
    let template = TEMPLATES[rng.random_range(0..TEMPLATES.len())];
    let status = if rng.random_bool(0.85) {
        "accept"
    } else {
        "reject"
    };
    let props = format!(r#"{{"template_id":"{template}","status":"{status}"}}"#);
    builder.push("subscription", at, Some(props), None);
}

/// A Poisson draw (Knuth for small means, a rounded normal for large ones).
fn poisson(rng: &mut Pcg64, mean: f64) -> u32 {
    if mean > 30.0 {
        return (mean + mean.sqrt() * rhythm::normal(rng)).round().max(0.0) as u32;
    }
    let limit = (-mean).exp();
    let mut product: f64 = rng.random();
    let mut count = 0;
    while product > limit {
        product *= rng.random::<f64>();
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;

    #[test]
    fn a_sessions_user_comes_in_bursts_of_events_minutes_apart() {
        let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let (mut bursts, mut events) = (0usize, 0usize);
        for index in 0..200 {
            let user = simulate(Family::Sessions, 5, index, start, 28);
            let mut times: Vec<i64> = user
                .events
                .iter()
                .filter(|e| e.event != "subscription")
                .map(|e| e.ts_ms)
                .collect();
            times.sort_unstable();
            events += times.len();
            bursts += 1 + times
                .windows(2)
                .filter(|w| w[1] - w[0] > 30 * 60_000)
                .count();
        }
        let per_burst = events as f64 / bursts as f64;
        assert!(
            (6.0..14.0).contains(&per_burst),
            "about 10 events a burst (1 to 20): {per_burst:.1}"
        );
        let classic = simulate(Family::Daily, 5, 1, start, 28);
        assert!(
            classic.events.len() < 200,
            "other families keep short sessions"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_user() {
        let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let first = simulate(Family::Classic, 42, 17, start, 30);
        let second = simulate(Family::Classic, 42, 17, start, 30);
        assert_eq!(first.events, second.events);
        assert_ne!(
            simulate(Family::Classic, 43, 17, start, 30).events,
            first.events
        );
    }

    #[test]
    fn events_stay_inside_the_window() {
        let start = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let from = start
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
            - DAY_MS;
        let to = from + 33 * DAY_MS;
        for index in 0..200 {
            for event in simulate(Family::Classic, 1, index, start, 30).events {
                assert!((from..to).contains(&event.ts_ms), "{event:?}");
            }
        }
    }
}
