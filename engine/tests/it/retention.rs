//! The outbox's retention: old finished sends are deleted, and nothing that a later decision
//! reads (pending sends, a user's latest send of a campaign, a dedup key that could still
//! send) goes with them.

use std::collections::BTreeMap;

use nudge_engine::store::Store;
use nudge_engine::store::outbox::{NewSend, Outcome, PlannedSend};
use nudge_engine::time::{DAY_MS, HOUR_MS};

use super::support::{NOV_1, TestStore};

/// Long ago: well past a 180-day retention at [`NOV_1`].
const OLD: i64 = NOV_1 - 400 * DAY_MS;
const CUTOFF: i64 = NOV_1 - 180 * DAY_MS;

fn send(key: &str, campaign: &str, user: &str, send_at_ms: i64, ttl_ms: i64) -> PlannedSend {
    PlannedSend {
        dedup_key: key.to_string(),
        campaign: campaign.to_string(),
        user_id: user.to_string(),
        template_id: "t".to_string(),
        connector: "dry-run".to_string(),
        page: None,
        data: BTreeMap::new(),
        send_at_ms,
        expires_at_ms: send_at_ms + ttl_ms,
        priority: 0,
        run_at_ms: None,
        quiet: None,
    }
}

/// Enqueues `planned` and, at its send time, gives it `outcome` as a dispatcher would.
async fn settled(store: &Store, planned: PlannedSend, outcome: Outcome) {
    let at = planned.send_at_ms;
    assert_eq!(store.enqueue_sends(&[planned], at).await.unwrap(), 1);
    let claimed = store
        .claim_sends("dry-run", "w", 1, at, 60_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .record_sends("w", &[(claimed[0].clone(), outcome)], at)
        .await
        .unwrap();
}

fn sent() -> Outcome {
    Outcome::Sent { provider_id: None }
}

/// A user's sends as (campaign, state, days after [`OLD`] it was planned for), by planned time.
pub(super) async fn sends_of(store: &Store, user: &str) -> Vec<(String, String, i64)> {
    let mut sends: Vec<(String, String, i64)> = store
        .user_sends(user, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.campaign,
                s.state.to_string(),
                (s.send_at_ms - OLD) / DAY_MS,
            )
        })
        .collect();
    sends.sort_by_key(|s| s.2);
    sends
}

fn row(campaign: &str, state: &str, day: i64) -> (String, String, i64) {
    (campaign.to_string(), state.to_string(), day)
}

#[tokio::test]
async fn old_finished_sends_go_and_what_later_decisions_read_stays() {
    let test = TestStore::new().await;
    let store = &test.store;
    // u1: two old sends of `a` that went out; the later one is what `min_interval_hours` reads.
    settled(store, send("a-u1-0", "a", "u1", OLD, HOUR_MS), sent()).await;
    settled(
        store,
        send("a-u1-10", "a", "u1", OLD + 10 * DAY_MS, HOUR_MS),
        sent(),
    )
    .await;
    // u2: an old failure and an old expiry: nothing reads them.
    let failed = Outcome::Failed {
        reason: "43101".to_string(),
        credit_gone: None,
    };
    settled(store, send("b-u2-0", "b", "u2", OLD, HOUR_MS), failed).await;
    store
        .enqueue_sends(&[send("a-u2-1", "a", "u2", OLD + DAY_MS, HOUR_MS)], OLD)
        .await
        .unwrap();
    assert_eq!(store.expire_sends(OLD + 2 * DAY_MS).await.unwrap(), 1);
    // u3: a recent send and an old one still planned (its expiry is ahead, below): both stay.
    settled(
        store,
        send("a-u3-390", "a", "u3", NOV_1 - 10 * DAY_MS, HOUR_MS),
        sent(),
    )
    .await;
    // u4: an old unknown (it may have reached the user) and a later sent one of the same
    // campaign: the unknown goes, the sent one is the latest and stays. An old holdout record
    // of another campaign goes.
    settled(
        store,
        send("b-u4-0", "b", "u4", OLD, HOUR_MS),
        Outcome::Unknown {
            reason: "timeout".to_string(),
        },
    )
    .await;
    settled(
        store,
        send("b-u4-5", "b", "u4", OLD + 5 * DAY_MS, HOUR_MS),
        sent(),
    )
    .await;
    let holdout = NewSend {
        send: send("c-u4-0", "c", "u4", OLD, HOUR_MS),
        holdout: true,
        cancel: Vec::new(),
    };
    store.enqueue_plan(&[holdout], OLD).await.unwrap();
    // Enqueued last: the dispatcher calls above would have claimed it.
    store
        .enqueue_sends(&[send("b-u3-0", "b", "u3", OLD, 500 * DAY_MS)], OLD)
        .await
        .unwrap();

    let deleted = store.prune_sends(CUTOFF, || true).await.unwrap();

    assert_eq!(deleted, 5, "a-u1-0, b-u2-0, a-u2-1, b-u4-0, c-u4-0");
    assert_eq!(sends_of(store, "u1").await, vec![row("a", "sent", 10)]);
    assert_eq!(sends_of(store, "u2").await, vec![]);
    assert_eq!(
        sends_of(store, "u3").await,
        vec![row("b", "planned", 0), row("a", "sent", 390)]
    );
    assert_eq!(sends_of(store, "u4").await, vec![row("b", "sent", 5)]);
    assert_eq!(
        store.prune_sends(CUTOFF, || true).await.unwrap(),
        0,
        "a second pass finds nothing"
    );
}

#[tokio::test]
async fn a_pruned_dedup_key_enqueued_again_is_never_sent() {
    let test = TestStore::new().await;
    let store = &test.store;
    let old = send("a-u1-0", "a", "u1", OLD, HOUR_MS);
    settled(store, old.clone(), sent()).await;
    settled(
        store,
        send("a-u1-1", "a", "u1", OLD + DAY_MS, HOUR_MS),
        sent(),
    )
    .await;
    assert_eq!(store.prune_sends(CUTOFF, || true).await.unwrap(), 1);

    // The same plan line again (a replayed plan file): its key is free, so the row comes
    // back, but it expired long ago and no dispatcher claims it.
    assert_eq!(store.enqueue_sends(&[old], NOV_1).await.unwrap(), 1);
    let claimed = store
        .claim_sends("dry-run", "w", 10, NOV_1, 60_000)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
    assert_eq!(store.expire_sends(NOV_1).await.unwrap(), 1);
}

#[tokio::test]
async fn sends_whose_expiry_is_not_past_the_cutoff_stay_however_old_their_last_change() {
    let test = TestStore::new().await;
    let store = &test.store;
    // Planned and expired long ago, but allowed to go out until after the cutoff.
    store
        .enqueue_sends(&[send("k", "a", "u1", OLD, 300 * DAY_MS)], OLD)
        .await
        .unwrap();
    let failed = Outcome::Failed {
        reason: "bad data".to_string(),
        credit_gone: None,
    };
    let claimed = store
        .claim_sends("dry-run", "w", 1, OLD, 60_000)
        .await
        .unwrap();
    store
        .record_sends("w", &[(claimed[0].clone(), failed)], OLD)
        .await
        .unwrap();
    assert_eq!(store.prune_sends(CUTOFF, || true).await.unwrap(), 0);
    assert_eq!(sends_of(store, "u1").await, vec![row("a", "failed", 0)]);
}

#[tokio::test]
async fn a_pass_walks_a_large_outbox_in_chunks_and_stops_when_asked() {
    let test = TestStore::new().await;
    let store = &test.store;
    let sends: Vec<PlannedSend> = (0..12_345)
        .map(|i| send(&format!("k{i}"), "a", &format!("u{i}"), OLD, HOUR_MS))
        .collect();
    assert_eq!(store.enqueue_sends(&sends, OLD).await.unwrap(), 12_345);
    assert_eq!(store.expire_sends(OLD + DAY_MS).await.unwrap(), 12_345);

    // Asked to stop before the second statement: one chunk went, the rest waits.
    let mut asked = 0;
    let first = store
        .prune_sends(CUTOFF, || {
            asked += 1;
            asked == 1
        })
        .await
        .unwrap();
    assert!(first > 0 && first < 12_345, "{first}");

    let rest = store.prune_sends(CUTOFF, || true).await.unwrap();
    assert_eq!(first + rest, 12_345);
    assert!(store.send_status(None).await.unwrap().is_empty());
}

/// Two sends of campaign `a` that expired unsent 40 (`forty`) and 20 (`twenty`) days before
/// NOV_1, each its own user.
pub(super) async fn expired_sends_40_and_20_days_old(store: &Store) {
    for (key, days) in [("forty", 40), ("twenty", 20)] {
        let at = NOV_1 - days * DAY_MS;
        store
            .enqueue_sends(&[send(key, "a", key, at, HOUR_MS)], at)
            .await
            .unwrap();
        store.expire_sends(at + HOUR_MS).await.unwrap();
    }
}

#[tokio::test]
async fn sends_prune_deletes_what_the_retention_allows_as_of_now() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nudge.toml");
    std::fs::write(
        &config,
        "data_dir = 'data'\n[dispatch]\nretention_days = 30\n",
    )
    .unwrap();
    let store = super::support::open_store(&dir.path().join("data")).await;
    expired_sends_40_and_20_days_old(&store).await;
    let prune = |args: &[&str]| {
        let out = super::support::nudge_with(&config)
            .args(["sends", "prune", "--now", &NOV_1.to_string()])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = prune(&[]);
    assert!(out.starts_with("deleted 1 finished sends"), "{out}");
    assert_eq!(sends_of(&store, "forty").await, vec![]);
    assert_eq!(sends_of(&store, "twenty").await.len(), 1);
    // A shorter retention than the weekly cap's still keeps 8 days.
    let out = prune(&["--older-than-days", "1"]);
    assert!(out.starts_with("deleted 1 finished sends"), "{out}");
    assert_eq!(sends_of(&store, "twenty").await, vec![]);
}
