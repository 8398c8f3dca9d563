//! The web console (#37), in Debian's Chromium driven over WebDriver, against `nudge serve` on
//! loopback over the quickstart's data: signing in and out, every page in both languages, the
//! campaign list against `nudge campaign status`, what a viewer may press, forms without their
//! token, and values from events rendered as text. Screenshots go to the target folder
//! (`console-screenshots/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::support::{SpawnGuarded, Spawned};
use super::webdriver::{Browser, Driver};

const ADMIN_KEY: &str = "console-admin-key-0123456789";
const VIEWER_KEY: &str = "console-viewer-key-0123456789";
/// A user id and an event prop an attacker chose.
const HOSTILE_USER: &str = "<script>window.pwned=1</script>";
const HOSTILE_PROP: &str = "<img src=x onerror=\"window.pwned=2\">";

/// `nudge serve` over a quickstart store, with an admin and a viewer key.
struct Console {
    dir: tempfile::TempDir,
    base: String,
    _serve: Spawned,
}

fn nudge(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nudge"));
    command
        .current_dir(dir)
        .env("NUDGE_TEST_MOCK_SECRET", "mock-secret")
        .env("CONSOLE_ADMIN_KEY", ADMIN_KEY)
        .env("CONSOLE_VIEWER_KEY", VIEWER_KEY);
    command
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

impl Console {
    /// The quickstart's store (its own SQLite file on either test pass: the console is the
    /// subject here), a hostile event, and `serve --listen` on a free port.
    fn start() -> Console {
        Console::start_with(None)
    }

    /// [`Console::start`], its `wechat` connector pointed at the WeChat mock at `mock` (the
    /// campaigns' sends then go out) and `u0000001` allowed for test sends.
    fn start_with(mock: Option<&str>) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        run(nudge(root).args(["quickstart", "--users", "400", "--days", "14"]));
        let mut config =
            "data_dir = 'nudge-data'\ncampaigns_dir = 'nudge-data/quickstart/campaigns'\n\
             [[server.keys]]\nenv = 'CONSOLE_ADMIN_KEY'\nscope = 'admin'\n\
             [[server.keys]]\nenv = 'CONSOLE_VIEWER_KEY'\nscope = 'viewer'\n\
             [console]\ntest_users = ['u0000001']\n"
                .to_string();
        if let Some(mock) = mock {
            config.push_str(&format!(
                "[connectors.wechat]\ntype = 'wechat'\nappid = 'wxmock'\n\
                 secret_env = 'NUDGE_TEST_MOCK_SECRET'\napi_base = '{mock}'\n"
            ));
        }
        std::fs::write(root.join("nudge.toml"), config).unwrap();
        let hostile = serde_json::json!({
            "user_id": HOSTILE_USER, "event": "page_view", "ts": 1_792_000_000_000_i64,
            "props": {"title": HOSTILE_PROP},
        });
        std::fs::write(root.join("hostile.ndjson"), hostile.to_string()).unwrap();
        run(nudge(root).args(["--quiet", "ingest", "hostile.ndjson"]));
        let mut serve = nudge(root)
            .args(["serve", "--lookback-hours", "0", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn_guarded();
        let mut stdout = std::io::BufReader::new(serve.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("/healthz") {
            line.clear();
            assert!(
                std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
                "serve printed no address"
            );
        }
        let base = line
            .split_whitespace()
            .find_map(|w| w.strip_suffix("/healthz"))
            .unwrap()
            .to_string();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Console {
            dir,
            base,
            _serve: serve,
        }
    }

    /// A browser asking for pages in `lang`, signed in with `key`, and the driver it runs in
    /// (the caller keeps it while the browser is used).
    async fn signed_in(&self, lang: &str, key: &str) -> (Driver, Browser) {
        let driver = Driver::start().await;
        let browser = driver.browser(lang).await;
        sign_in(&browser, &self.base, key).await;
        (driver, browser)
    }

    /// A connection to the store's SQLite file, for writing what the test needs in place.
    async fn database(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let db = self.dir.path().join("nudge-data/nudge.db");
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap()
    }

    fn nudge(&self) -> Command {
        let mut command = nudge(self.dir.path());
        command
            .arg("--config")
            .arg(self.dir.path().join("nudge.toml"));
        command
    }

    /// Marks a campaign's sent sends paused, as a refusal of its template would have, and
    /// without quiet hours (the test may run at night in their users' zones: resumed, they go
    /// out at once).
    async fn pause(&self, campaign: &str) {
        let mut connection = self.database().await;
        let paused = sqlx::query(
            "UPDATE sends SET state = 'paused', failure = 'template_id is invalid (40037)',
                 quiet_start = NULL, quiet_end = NULL, expires_at = ?
             WHERE campaign = ? AND state = 'sent'",
        )
        // Live for a day more: the service's dispatcher expires paused sends past their time.
        .bind(chrono::Utc::now().timestamp_millis() + 86_400_000)
        .bind(campaign)
        .execute(&mut connection)
        .await
        .unwrap();
        assert!(paused.rows_affected() > 0, "{campaign} had no sent sends");
    }
}

impl Console {
    /// Records a finished scheduled run of `campaign`, `days_ago` days back, with its skips
    /// and planned hours (as the scheduler's `finish_run` writes them).
    async fn record_run(
        &self,
        campaign: &str,
        days_ago: i64,
        skipped: &[(&str, u64)],
        hours: &[u64; 24],
    ) {
        let mut connection = self.database().await;
        let at =
            chrono::Utc::now().timestamp_millis() / 3_600_000 * 3_600_000 - days_ago * 86_400_000;
        let skipped: BTreeMap<&str, u64> = skipped.iter().copied().collect();
        sqlx::query(
            "INSERT INTO campaign_runs (campaign, scheduled_at, state, started_ms, finished_ms,
                 planned, skipped, hours)
             VALUES (?, ?, 'done', ?, ?, ?, ?, ?)",
        )
        .bind(campaign)
        .bind(at)
        .bind(at)
        .bind(at + 1_000)
        .bind(hours.iter().sum::<u64>() as i64)
        .bind(serde_json::to_string(&skipped).unwrap())
        .bind(serde_json::to_string(hours).unwrap())
        .execute(&mut connection)
        .await
        .unwrap();
    }

    /// Marks the `count` oldest sent sends failed with `reason`; returns their ids, ascending.
    async fn fail_some(&self, reason: &str, count: i64) -> Vec<i64> {
        let mut connection = self.database().await;
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE sends SET state = 'failed', failure = ? WHERE id IN
                 (SELECT id FROM sends WHERE state = 'sent' ORDER BY id LIMIT ?)
             RETURNING id",
        )
        .bind(reason)
        .bind(count)
        .fetch_all(&mut connection)
        .await
        .unwrap();
        assert_eq!(ids.len() as i64, count, "not enough sent sends");
        let mut ids = ids;
        ids.sort();
        ids
    }
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

async fn sign_in(browser: &Browser, base: &str, key: &str) {
    browser.goto(&format!("{base}/")).await;
    assert!(
        browser.url().await.contains("/sign-in"),
        "not sent to sign in"
    );
    browser.find("#key").await.type_text(key).await;
    browser.find("#sign-in").await.click().await;
    browser.wait_for_url(|url| !url.contains("/sign-in")).await;
}

/// The catalogue's keys: none may show on a page as itself.
fn catalogue_keys() -> Vec<String> {
    let text = include_str!("../../src/service/console/i18n/en.toml");
    text.lines()
        .filter_map(|line| line.strip_prefix('"')?.split('"').next())
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_opens_every_page_in_both_languages_and_signing_out_closes_them() {
    let console = Console::start();
    let driver = Driver::start().await;
    let browser = driver.browser("en-US").await;
    let base = &console.base;
    sign_in(&browser, base, ADMIN_KEY).await;
    let pages = [
        ("overview", "/"),
        ("campaigns", "/campaigns"),
        ("campaign", "/campaigns/cart_abandonment"),
        ("user", "/users?id=u0000001"),
        ("users", "/users"),
        ("deliveries", "/deliveries"),
        ("rules", "/rules"),
    ];
    let keys = catalogue_keys();
    for (lang, marker) in [("en", "Overview"), ("zh-CN", "概览")] {
        if lang == "zh-CN" {
            // The switch in the header, from any page, keeps the viewer where they were.
            browser.goto(&format!("{base}/campaigns")).await;
            browser.find("#lang").await.click().await;
            browser
                .wait_for(|source| source.contains("lang=\"zh-CN\""))
                .await;
            assert!(
                browser.url().await.ends_with("/campaigns"),
                "{}",
                browser.url().await
            );
        }
        for (name, path) in pages {
            browser.goto(&format!("{base}{path}")).await;
            let marked = format!("lang=\"{lang}\"");
            browser.wait_for(|source| source.contains(&marked)).await;
            let source = browser.source().await;
            assert!(
                source.contains(marker),
                "{path} in {lang} has no navigation"
            );
            for key in &keys {
                assert!(
                    !source.contains(&format!(">{key}<")),
                    "{path} in {lang} shows the bare key {key}"
                );
            }
            if name == "user" {
                // The user's week and the population's, 7 x 24 cells each.
                for heatmap in ["#user-week", "#population-week"] {
                    let cells = browser.find_all(&format!("{heatmap} rect.cell")).await;
                    assert_eq!(cells.len(), 168, "{heatmap}");
                }
            }
            browser
                .screenshot(&screenshots(), &format!("{name}-{lang}"))
                .await;
        }
    }
    // Signing out ends the session: every page sends the browser back to sign in.
    browser.find("form.sign-out button").await.click().await;
    browser.wait_for_url(|url| url.contains("/sign-in")).await;
    for (_, path) in pages {
        browser.goto(&format!("{base}{path}")).await;
        assert!(
            browser.url().await.contains("/sign-in"),
            "{path} after sign-out"
        );
    }
    // A wrong key is refused with a message, and no session.
    browser
        .find("#key")
        .await
        .type_text("not-a-key-of-this-service")
        .await;
    browser.find("#sign-in").await.click().await;
    browser
        .wait_for(|source| source.contains("不是本服务"))
        .await;
    browser.goto(&format!("{base}/campaigns")).await;
    assert!(browser.url().await.contains("/sign-in"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_list_shows_the_numbers_campaign_status_prints() {
    let console = Console::start();
    let (_driver, browser) = console.signed_in("en-US", VIEWER_KEY).await;
    browser.goto(&format!("{}/campaigns", console.base)).await;
    // Right after the start the clicks may still be being read: the page says so and reloads
    // itself until they are there.
    browser
        .wait_for(|source| source.contains("figures-as-of"))
        .await;
    let rows = browser.find_all("#campaigns tbody tr").await;
    assert_eq!(rows.len(), 3, "the quickstart's three campaigns");
    let mut compared = 0;
    for name in ["cart_abandonment", "daily_checkin", "win_back"] {
        let printed = run(console.nudge().args(["campaign", "status", name]));
        // "  sent             6  " and "clicks: 0 of 6 sent (0.0%)".
        let sent: u64 = printed
            .lines()
            .find_map(|line| line.trim().strip_prefix("sent "))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or(0);
        let rate = printed
            .lines()
            .find_map(|line| {
                line.split_once(" sent (")
                    .map(|(_, r)| r.trim_end_matches(')').replace('%', ""))
            })
            // "no sends yet": nothing sent, nothing clicked.
            .unwrap_or_else(|| "0.0".into());
        let row = format!("#campaigns tr[data-campaign='{name}']");
        let shown_sent = browser.find(&format!("{row} td.sent")).await.text().await;
        let shown_rate = browser
            .find(&format!("{row} td.click-rate"))
            .await
            .text()
            .await;
        assert_eq!(shown_sent, sent.to_string(), "{name}: {printed}");
        assert_eq!(shown_rate.replace(" %", ""), rate, "{name}: {printed}");
        compared += usize::from(sent > 0);
    }
    assert!(
        compared >= 2,
        "the quickstart sent for at least two campaigns"
    );
    browser
        .screenshot(&screenshots(), "campaign-list-viewer")
        .await;
    browser.close().await;
}

// The overview: the events the quickstart and the test ingested, in this hour's file bar (as
// `nudge stats` counts them), and the one `serve` process, leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_the_stored_events_and_lists_the_leading_process() {
    let console = Console::start();
    let printed = run(console.nudge().arg("stats"));
    let stored: u64 = printed
        .lines()
        .find_map(|line| line.trim().strip_prefix("events:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no event count in {printed}"));
    let (_driver, browser) = console.signed_in("zh-CN", VIEWER_KEY).await;
    let counted = |series: &'static str| {
        let browser = &browser;
        async move {
            let counts = browser
                .execute(&format!(
                    "return Array.from(document.querySelectorAll('#events rect[data-series={series}]'))\
                     .map(r => Number(r.dataset.count));"
                ))
                .await;
            counts
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>()
        }
    };
    // The process announces itself as it starts; its lease may take a moment to show.
    for _ in 0..50 {
        if browser.source().await.contains("data-leading=\"true\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        browser.goto(&format!("{}/", console.base)).await;
    }
    assert_eq!(counted("file").await, stored, "{printed}");
    assert_eq!(counted("http").await, 0);
    let processes = browser.find_all("#processes tbody tr").await;
    assert_eq!(processes.len(), 1);
    assert_eq!(processes[0].property("dataset").await["leading"], "true");
    browser
        .screenshot(&screenshots(), "overview-processes-zh")
        .await;
    browser.close().await;
}

// A campaign's page sums its recorded runs: planned sends by local hour and skips by reason,
// the numbers `campaign status` prints run by run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_page_sums_the_skips_and_send_hours_of_its_runs() {
    let console = Console::start();
    let mut eight = [0u64; 24];
    eight[8] = 5;
    eight[9] = 1;
    console
        .record_run("daily_checkin", 1, &[("no credit", 3)], &eight)
        .await;
    let mut nine = [0u64; 24];
    nine[9] = 2;
    console
        .record_run(
            "daily_checkin",
            2,
            &[("no credit", 2), ("quiet <tag>", 1)],
            &nine,
        )
        .await;
    let printed = run(console
        .nudge()
        .args(["campaign", "status", "daily_checkin"]));
    let skipped: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains(" skipped, "))
        .map(str::trim)
        .collect();
    assert_eq!(
        skipped,
        [
            "3 skipped, no credit",
            "2 skipped, no credit",
            "1 skipped, quiet <tag>"
        ],
        "newest run first: {printed}"
    );
    let (_driver, browser) = console.signed_in("en-US", VIEWER_KEY).await;
    browser
        .goto(&format!("{}/campaigns/daily_checkin", console.base))
        .await;
    let skips = browser
        .execute(
            "return Array.from(document.querySelectorAll('#run-skips tbody tr'))\
             .map(r => Array.from(r.cells).map(c => c.textContent).join('='));",
        )
        .await;
    assert_eq!(skips, serde_json::json!(["no credit=5", "quiet <tag>=1"]));
    let bars = browser
        .execute(
            "return Array.from(document.querySelectorAll('#run-hours rect title'))\
             .map(t => t.textContent).filter(t => !t.endsWith(' 0'));",
        )
        .await;
    assert_eq!(bars, serde_json::json!(["08:00 5", "09:00 3"]));
    browser.screenshot(&screenshots(), "campaign-runs-en").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_resume_a_campaign_and_an_admin_can() {
    let console = Console::start();
    console.pause("daily_checkin").await;
    let driver = Driver::start().await;
    let page = format!("{}/campaigns/daily_checkin", console.base);

    let viewer = driver.browser("en-US").await;
    sign_in(&viewer, &console.base, VIEWER_KEY).await;
    viewer.goto(&page).await;
    let button = viewer.find("#resume").await;
    assert_eq!(button.property("disabled").await, serde_json::json!(true));
    // Enabled by hand, the button's post is still refused: the server checks the session.
    viewer
        .execute("document.getElementById('resume').disabled = false;")
        .await;
    viewer.find("#resume").await.click().await;
    viewer
        .wait_for(|source| source.contains("viewer key can look"))
        .await;
    let status = run(console
        .nudge()
        .args(["campaign", "status", "daily_checkin"]));
    assert!(
        status.contains("paused"),
        "a viewer resumed the campaign:\n{status}"
    );
    viewer.close().await;

    let admin = driver.browser("zh-CN").await;
    sign_in(&admin, &console.base, ADMIN_KEY).await;
    admin.goto(&page).await;
    admin
        .screenshot(&screenshots(), "campaign-paused-zh-CN")
        .await;
    admin.find("#resume").await.click().await;
    admin
        .wait_for(|source| source.contains("id=\"sends\"") && !source.contains("id=\"resume\""))
        .await;
    let status = run(console
        .nudge()
        .args(["campaign", "status", "daily_checkin"]));
    assert!(!status.contains("paused"), "{status}");
    assert!(
        status.contains("planned"),
        "resumed sends are planned again:\n{status}"
    );
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_posted_without_its_token_is_refused() {
    let console = Console::start();
    console.pause("daily_checkin").await;
    let (driver, browser) = console.signed_in("en-US", ADMIN_KEY).await;
    browser
        .goto(&format!("{}/campaigns/daily_checkin", console.base))
        .await;
    browser
        .execute("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove());")
        .await;
    browser.find("#resume").await.click().await;
    browser
        .wait_for(|source| source.contains("security token"))
        .await;
    let status = run(console
        .nudge()
        .args(["campaign", "status", "daily_checkin"]));
    assert!(
        status.contains("paused"),
        "resumed without a token:\n{status}"
    );
    // The sign-in form too: a key posted without the form's token starts no session.
    let fresh = driver.browser("en-US").await;
    fresh.goto(&format!("{}/sign-in", console.base)).await;
    fresh
        .execute("document.querySelector('input[name=csrf]').remove();")
        .await;
    fresh.find("#key").await.type_text(ADMIN_KEY).await;
    fresh.find("#sign-in").await.click().await;
    fresh
        .wait_for(|source| source.contains("security token"))
        .await;
    fresh.goto(&format!("{}/", console.base)).await;
    assert!(fresh.url().await.contains("/sign-in"));
    browser.close().await;
    fresh.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_events_render_as_text() {
    let console = Console::start();
    let (_driver, browser) = console.signed_in("en-US", ADMIN_KEY).await;
    let id: String = HOSTILE_USER.bytes().map(|b| format!("%{b:02X}")).collect();
    browser
        .goto(&format!("{}/users?id={id}", console.base))
        .await;
    assert_eq!(browser.find("#user").await.text().await, HOSTILE_USER);
    let timeline = browser.find("#timeline").await.text().await;
    // The props show as their JSON text (quotes escaped), the markup as characters.
    assert!(timeline.contains("<img src=x onerror="), "{timeline}");
    assert!(
        browser.find_all("img").await.is_empty(),
        "the prop became an element"
    );
    assert_eq!(
        browser.find_all("script").await.len(),
        1,
        "only the console's own script"
    );
    assert_eq!(
        browser.execute("return window.pwned === undefined;").await,
        serde_json::json!(true)
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previews_audience_is_the_dry_runs() {
    let console = Console::start();
    let (_driver, browser) = console.signed_in("zh-CN", VIEWER_KEY).await;
    // The form on the campaign page previews now; a viewer may (a dry run writes nothing).
    browser
        .goto(&format!("{}/campaigns/daily_checkin", console.base))
        .await;
    browser.find("#preview").await.click().await;
    browser
        .wait_for(|source| source.contains("id=\"audience\""))
        .await;
    let mut compared = Vec::new();
    for (name, at) in [
        ("daily_checkin", "2026-10-14T16:00:00Z"),
        ("cart_abandonment", "2026-10-14T16:00:00Z"),
        ("win_back", "2026-10-14T16:00:00Z"),
    ] {
        let printed =
            run(console
                .nudge()
                .args(["campaign", "run", name, "--dry-run", "--now", at]));
        // "campaign NAME: C users considered, N planned (dry run: nothing written) in ..."
        let planned: u64 = printed
            .lines()
            .find_map(|line| line.strip_prefix(&format!("campaign {name}: ")))
            .and_then(|rest| rest.split(", ").nth(1))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no planned count in {printed}"));
        browser
            .goto(&format!(
                "{}/campaigns/{name}/preview?at={}",
                console.base,
                at.replace(':', "%3A")
            ))
            .await;
        let shown = browser.find("#audience").await.text().await;
        assert_eq!(shown, planned.to_string(), "{name} at {at}: {printed}");
        compared.push(planned);
        if name == "daily_checkin" {
            browser
                .screenshot(&screenshots(), "campaign-preview-zh-CN")
                .await;
        }
    }
    assert!(
        compared.iter().any(|n| *n > 0),
        "some preview has an audience: {compared:?}"
    );
    // Nothing was written: the outbox is as before.
    let status = run(console.nudge().args(["sends", "status"]));
    assert!(
        !status.contains("planned"),
        "a preview enqueued sends:\n{status}"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_log_pages_through_a_campaigns_sends_newest_first() {
    let console = Console::start();
    let (_driver, browser) = console.signed_in("en-US", VIEWER_KEY).await;
    let printed = run(console
        .nudge()
        .args(["sends", "status", "--campaign", "daily_checkin"]));
    let sent: usize = printed
        .lines()
        .find_map(|line| line.trim().strip_prefix("sent"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sent count in {printed}"));
    assert!(sent > 7, "enough sends for pages of 7: {printed}");
    // The filter form, then pages of 7 by the "Older" link.
    browser
        .goto(&format!("{}/deliveries?limit=7", console.base))
        .await;
    browser
        .execute(
            "document.getElementById('filter-campaign').value = 'daily_checkin';\
             document.getElementById('filter-state').value = 'sent';",
        )
        .await;
    browser.find("#filter").await.click().await;
    browser
        .wait_for_url(|url| url.contains("campaign=daily_checkin"))
        .await;
    let mut ids: Vec<i64> = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        for row in browser.find_all("#deliveries tbody tr").await {
            let id: i64 = row.property("dataset").await["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let campaign = row.property("dataset").await["campaign"].clone();
            assert_eq!(campaign, "daily_checkin");
            assert_eq!(row.property("dataset").await["state"], "sent");
            ids.push(id);
        }
        if pages == 2 {
            browser.screenshot(&screenshots(), "deliveries-en").await;
        }
        let older = browser.find_all("#older").await;
        if older.is_empty() {
            break;
        }
        let before = browser.url().await;
        older[0].click().await;
        browser.wait_for_url(|url| url != before).await;
        assert!(pages < 100, "the pager never ends");
    }
    assert!(pages >= 2, "more than one page");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeat: {ids:?}"
    );
    assert_eq!(ids.len(), sent, "every sent send once across the pages");
    browser.close().await;
}

// The reason filter reads its text literally (`%` and `_` included) in failures and delivery
// results; the due-time filter reads the viewer's zone; both list exactly the sends of the
// unfiltered log that match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_log_filters_by_reason_and_due_time_in_the_viewers_zone() {
    let console = Console::start();
    let failed = console
        .fail_some("errcode 43101: the user refused (50%_off)", 3)
        .await;
    let (_driver, browser) = console.signed_in("en-US", VIEWER_KEY).await;
    let listed = |query: String| {
        let browser = &browser;
        let base = &console.base;
        async move {
            browser
                .goto(&format!("{base}/deliveries?limit=200&{query}"))
                .await;
            let mut sends = Vec::new();
            for row in browser.find_all("#deliveries tbody tr").await {
                let data = row.property("dataset").await;
                let number = |key: &str| data[key].as_str().unwrap().parse::<i64>().unwrap();
                sends.push((number("id"), number("sendAt")));
            }
            sends
        }
    };
    let all = listed(String::new()).await;
    assert!(all.len() > 10 && all.len() < 200, "{} sends", all.len());
    // Reason: the form's field, typed as a user would.
    browser.goto(&format!("{}/deliveries", console.base)).await;
    browser
        .find("#filter-reason")
        .await
        .type_text("REFUSED (50%_off")
        .await;
    browser.find("#filter").await.click().await;
    browser.wait_for_url(|url| url.contains("reason=")).await;
    let mut ids = listed_ids(&browser).await;
    ids.sort();
    assert_eq!(ids, failed, "the failed sends, any case");
    let percent: Vec<i64> = listed("reason=%25".into())
        .await
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(percent.len(), 3, "a % is a percent sign, not a wildcard");
    assert!(
        listed("reason=43_01".into()).await.is_empty(),
        "an _ is an underscore"
    );
    // Due time: from the median send's minute to an hour after it, in the zone the page shows.
    browser.goto(&format!("{}/deliveries", console.base)).await;
    let zone: chrono_tz::Tz = browser
        .find("#filter-zone")
        .await
        .text()
        .await
        .parse()
        .unwrap();
    let mut times: Vec<i64> = all.iter().map(|s| s.1).collect();
    times.sort();
    let middle = times[times.len() / 2];
    let minute = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .with_timezone(&zone)
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let (from_ms, to_ms) = (
        middle / 60_000 * 60_000,
        (middle + 3_600_000) / 60_000 * 60_000,
    );
    browser
        .execute(&format!(
            "document.getElementById('filter-from').value = '{}';\
             document.getElementById('filter-to').value = '{}';",
            minute(from_ms),
            minute(to_ms)
        ))
        .await;
    browser.find("#filter").await.click().await;
    browser.wait_for_url(|url| url.contains("from=")).await;
    let within = listed_ids(&browser).await;
    let expected: Vec<i64> = all
        .iter()
        .filter(|(_, at)| *at >= from_ms && *at < to_ms)
        .map(|s| s.0)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        within,
        expected,
        "the sends due in [{}, {})",
        minute(from_ms),
        minute(to_ms)
    );
    browser.close().await;
}

/// The ids of the sends the deliveries page lists, in its order.
async fn listed_ids(browser: &Browser) -> Vec<i64> {
    let mut ids = Vec::new();
    for row in browser.find_all("#deliveries tbody tr").await {
        let data = row.property("dataset").await;
        ids.push(data["id"].as_str().unwrap().parse().unwrap());
    }
    ids
}

/// Puts `text` in the playground's editor (a textarea's value, set as a paste would).
async fn set_source(browser: &Browser, text: &str) {
    let script = format!(
        "document.getElementById('source').value = {};",
        serde_json::Value::String(text.to_string())
    );
    browser.execute(&script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_playground_shows_errors_at_their_line_explains_and_counts() {
    let console = Console::start();
    let (_driver, browser) = console.signed_in("en-US", VIEWER_KEY).await;
    browser
        .goto(&format!("{}/rules?from=daily_checkin", console.base))
        .await;
    let loaded = browser.find("#source").await.property("value").await;
    assert!(
        loaded.as_str().unwrap().contains("tmpl_daily_checkin"),
        "the campaign's rule is loaded: {loaded}"
    );

    // A syntax error on line 3 is shown at line 3.
    set_source(
        &browser,
        "fn target(user) {\n    let n = user.count(\"app_open\", 30);\n    n > \n}\n",
    )
    .await;
    browser.find("#check").await.click().await;
    browser
        .wait_for(|source| source.contains("id=\"result\""))
        .await;
    let error = browser.find("#rule-error").await.text().await;
    assert!(
        error.contains("Line 3") || error.contains("Line 4"),
        "{error}"
    );
    browser.screenshot(&screenshots(), "rules-error-en").await;

    // Explain: the trace of target(user) for one user, a step per statement.
    let rule =
        "fn target(user) {\n    let opens = user.count(\"app_open\", 3650);\n    opens > 2\n}\n";
    set_source(&browser, rule).await;
    browser
        .execute("document.getElementById('explain-user').value = 'u0000001';")
        .await;
    browser.find("#explain").await.click().await;
    browser
        .wait_for(|source| source.contains("id=\"verdict\""))
        .await;
    let steps = browser.find_all("#trace tr.step").await;
    assert!(steps.len() >= 2, "one step per statement");
    let lines: Vec<String> = {
        let mut lines = Vec::new();
        for step in &steps {
            lines.push(
                step.property("dataset").await["line"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        lines
    };
    assert!(
        lines.contains(&"2".to_string()) && lines.contains(&"3".to_string()),
        "{lines:?}"
    );
    let printed = {
        std::fs::write(console.dir.path().join("opens.rhai"), rule).unwrap();
        run(console
            .nudge()
            .args(["rules", "explain", "opens.rhai", "--user", "u0000001"]))
    };
    let verdict = browser.find("#verdict").await.text().await;
    let targeted_by_cli = printed.contains("targeted") && !printed.contains("not targeted");
    assert_eq!(
        verdict.starts_with("targeted"),
        targeted_by_cli,
        "page: {verdict}\ncommand:\n{printed}"
    );

    // The campaign's test cases, against the rule as edited: all pass on the campaign's own
    // rule, and a rule that targets nobody fails some.
    browser
        .goto(&format!("{}/rules?from=daily_checkin", console.base))
        .await;
    browser.find("#tests").await.click().await;
    browser
        .wait_for(|source| source.contains("id=\"cases-summary\""))
        .await;
    let cases = browser.find_all("#cases tr.case").await;
    assert!(
        !cases.is_empty(),
        "the quickstart's daily_checkin has test cases"
    );
    for case in &cases {
        assert_eq!(case.property("dataset").await["passed"], "true");
    }
    set_source(&browser, "fn target(user) { false }\n").await;
    // The summary now on the page is the last run's: gone, its return marks the new answer.
    browser
        .execute("document.getElementById('cases-summary').remove();")
        .await;
    browser.find("#tests").await.click().await;
    browser
        .wait_for(|source| source.contains("id=\"cases-summary\""))
        .await;
    assert!(
        !browser
            .find_all("#cases tr.case[data-passed='false']")
            .await
            .is_empty(),
        "a rule targeting nobody passes every case"
    );
    set_source(&browser, rule).await;

    // The audience: what `nudge rules run` counts over the store.
    browser.find("#audience").await.click().await;
    browser
        .wait_for(|source| source.contains("id=\"audience-count\""))
        .await;
    let counted = browser.find("#audience-count").await.text().await;
    let printed = run(console.nudge().args(["rules", "run", "opens.rhai"]));
    // "opens.rhai: 400 users, 311 targeted, ..."
    let targeted = printed
        .split(", ")
        .find_map(|part| part.strip_suffix(" targeted"))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(
        counted.starts_with(&format!("{targeted} of ")),
        "page: {counted}\ncommand: {printed}"
    );
    assert_ne!(targeted, "0", "a rule that targets someone: {printed}");
    browser.close().await;
}

/// Waits (up to 20 s) until the mock has seen `count` send requests.
async fn mock_sees(mock: &str, count: u64) {
    let started = std::time::Instant::now();
    loop {
        let seen = super::dispatch::requests_seen(mock).await;
        if seen >= count {
            assert_eq!(seen, count, "more requests than sends");
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the mock saw {seen} of {count} requests in 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_and_a_resumed_campaigns_sends_reach_wechat() {
    let (_mock, mock) = super::dispatch::start_mock_process(0);
    let console = Console::start_with(Some(&mock));
    let driver = Driver::start().await;
    let page = format!("{}/campaigns/daily_checkin", console.base);

    // A viewer cannot press it.
    let viewer = driver.browser("en-US").await;
    sign_in(&viewer, &console.base, VIEWER_KEY).await;
    viewer.goto(&page).await;
    assert_eq!(
        viewer.find("#test-send").await.property("disabled").await,
        serde_json::json!(true)
    );
    viewer.close().await;

    let admin = driver.browser("en-US").await;
    sign_in(&admin, &console.base, ADMIN_KEY).await;
    // Only ids on the allow-list.
    admin.goto(&page).await;
    admin.find("#test-user").await.type_text("u0000002").await;
    admin.find("#test-send").await.click().await;
    admin
        .wait_for(|source| source.contains("is not on [console] test_users"))
        .await;
    admin.goto(&page).await;
    admin.find("#test-user").await.type_text("u0000001").await;
    admin.find("#test-send").await.click().await;
    admin
        .wait_for(|source| source.contains("id=\"test-sent\""))
        .await;
    mock_sees(&mock, 1).await;
    let status = run(console
        .nudge()
        .args(["sends", "status", "--campaign", "daily_checkin:test"]));
    assert!(status.contains("sent"), "{status}");

    // A paused campaign resumed from its button: its sends go out.
    console.pause("daily_checkin").await;
    let paused: u64 = run(console
        .nudge()
        .args(["sends", "status", "--campaign", "daily_checkin"]))
    .lines()
    .find_map(|line| line.trim().strip_prefix("paused"))
    .and_then(|rest| rest.split_whitespace().next())
    .and_then(|n| n.parse().ok())
    .expect("paused sends");
    admin.goto(&page).await;
    admin.find("#resume").await.click().await;
    admin
        .wait_for(|source| !source.contains("id=\"resume\""))
        .await;
    mock_sees(&mock, 1 + paused).await;
    // The overview's chart shows them among the sends that ended this hour (the quickstart's
    // own ended on its simulated days, weeks before the chart's 48 hours).
    admin.goto(&format!("{}/", console.base)).await;
    let started = std::time::Instant::now();
    while admin.find_all("#outcomes rect").await.is_empty() {
        assert!(
            started.elapsed().as_secs() < 10,
            "no bar in the outcomes chart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        admin.goto(&format!("{}/", console.base)).await;
    }
    admin
        .screenshot(&screenshots(), "overview-after-sends-en")
        .await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_saves_a_rule_and_only_one_that_compiles() {
    let console = Console::start();
    let file = console
        .dir
        .path()
        .join("nudge-data/quickstart/campaigns/rules/win_back.rhai");
    let original = std::fs::read_to_string(&file).unwrap();
    let driver = Driver::start().await;
    let page = format!("{}/rules?from=win_back", console.base);

    let viewer = driver.browser("en-US").await;
    sign_in(&viewer, &console.base, VIEWER_KEY).await;
    viewer.goto(&page).await;
    assert_eq!(
        viewer.find("#save").await.property("disabled").await,
        serde_json::json!(true)
    );
    viewer
        .execute("document.getElementById('save').disabled = false;")
        .await;
    set_source(&viewer, "fn target(user) { true }\n").await;
    viewer.find("#save").await.click().await;
    viewer
        .wait_for(|source| source.contains("viewer key can look"))
        .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    viewer.close().await;

    let admin = driver.browser("en-US").await;
    sign_in(&admin, &console.base, ADMIN_KEY).await;
    // A rule that does not compile is shown its error and not saved.
    admin.goto(&page).await;
    set_source(&admin, "fn target(user) {\n").await;
    admin.find("#save").await.click().await;
    admin
        .wait_for(|source| source.contains("id=\"rule-error\""))
        .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    // One that compiles replaces the campaign's rule file.
    let edited = format!("// edited in the console\n{original}");
    admin.goto(&page).await;
    set_source(&admin, &edited).await;
    admin.find("#save").await.click().await;
    admin
        .wait_for(|source| source.contains("id=\"saved\""))
        .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited);
    admin.close().await;
}

// A form's body is read only after its session checks, and never past 256 KiB. The requests
// declare a 300 KiB body and send none of it: each answer must come before the body does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_body_is_read_only_for_a_session_and_only_so_far() {
    let console = Console::start();
    let (_driver, browser) = console.signed_in("en-US", VIEWER_KEY).await;
    let session = browser.cookie("nudge_session").await;
    browser.close().await;
    let anonymous = status_before_the_body(&console.base, "/rules", None, 300 * 1024);
    assert_eq!(anonymous, 303, "no session: sent to sign in");
    let signed_in = status_before_the_body(&console.base, "/rules", Some(&session), 300 * 1024);
    assert_eq!(signed_in, 413, "a form over 256 KiB");
    let forged = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", console.base))
        .header(
            "cookie",
            format!("nudge_session={}", session.replacen("viewer", "admin", 1)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 303, "an altered session is no session");
}

/// The status `serve` answers a form post to `path` that declares `length` bytes of body and
/// sends none of them (0 when no answer comes within 10 s).
fn status_before_the_body(base: &str, path: &str, session: Option<&str>, length: usize) -> u16 {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let cookie = session
        .map(|value| format!("Cookie: nudge_session={value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {base}\r\n{cookie}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 12];
    match stream.read_exact(&mut answer) {
        Ok(()) => String::from_utf8_lossy(&answer[9..12]).parse().unwrap_or(0),
        Err(_) => 0,
    }
}

/// A process and everything it started (its own process group), killed together when dropped.
struct Group(Spawned);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

// `nudge quickstart --serve`: the tour, then a console one signs in to with the viewer key it
// printed, over the tour's data; a SIGTERM to the quickstart stops the service with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serve_leaves_a_console_its_printed_key_signs_in_to() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut command = nudge(dir.path());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .args(["quickstart", "--users", "300", "--days", "7"])
        .args(["--serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut group = Group(command.spawn_guarded());
    let mut stdout = std::io::BufReader::new(group.0.stdout.take().unwrap());
    let (mut base, mut viewer_key) = (None, None);
    let mut printed = String::new();
    while viewer_key.is_none() {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no console address and key in: {printed}"
        );
        printed.push_str(&line);
        if let Some(url) = line.trim().strip_prefix("The web console: ") {
            base = Some(url.trim_end_matches('/').to_string());
        }
        if let Some(key) = line
            .trim()
            .strip_prefix("viewer key (sees everything, changes nothing): ")
        {
            viewer_key = Some(key.to_string());
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let base = base.unwrap_or_else(|| panic!("no console address in: {printed}"));
    let viewer_key = viewer_key.unwrap();
    assert!(viewer_key.len() >= 32, "a generated key: {viewer_key}");
    let driver = Driver::start().await;
    let browser = driver.browser("zh-CN").await;
    sign_in(&browser, &base, &viewer_key).await;
    browser.goto(&format!("{base}/campaigns")).await;
    let rows = browser.find_all("#campaigns tbody tr").await;
    assert_eq!(rows.len(), 3, "the tour's three campaigns");
    browser.goto(&format!("{base}/deliveries")).await;
    assert!(
        !browser.find_all("#deliveries tbody tr").await.is_empty(),
        "the tour's sends"
    );
    browser.close().await;
    let pid = group.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = group.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let address = base.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "the service stopped with the quickstart"
    );
}

// See: #38. The forget button on a user's page: a viewer's is disabled and refused by the
// server; an admin must type the id again (a wrong one forgets nothing); then the page says what
// went, the user page finds nothing of them, and `nudge users export` has nothing to give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_forgets_a_user_from_their_page_after_typing_the_id_again() {
    let console = Console::start();
    let driver = Driver::start().await;
    let page = format!("{}/users?id=u0000001", console.base);

    let viewer = driver.browser("en-US").await;
    sign_in(&viewer, &console.base, VIEWER_KEY).await;
    viewer.goto(&page).await;
    assert_eq!(
        viewer
            .find("#forget-submit")
            .await
            .property("disabled")
            .await,
        serde_json::json!(true)
    );
    viewer
        .execute("document.getElementById('forget').open = true; document.getElementById('forget-submit').disabled = false;")
        .await;
    viewer
        .find("#forget-confirm")
        .await
        .type_text("u0000001")
        .await;
    viewer.find("#forget-submit").await.click().await;
    viewer
        .wait_for(|source| source.contains("viewer key can look"))
        .await;
    viewer.close().await;

    let admin = driver.browser("en-US").await;
    sign_in(&admin, &console.base, ADMIN_KEY).await;
    admin.goto(&page).await;
    admin.find("#forget summary").await.click().await;
    admin
        .find("#forget-confirm")
        .await
        .type_text("u000000")
        .await;
    admin.find("#forget-submit").await.click().await;
    admin
        .wait_for(|source| source.contains("Nothing was forgotten"))
        .await;
    admin.goto(&page).await;
    assert!(!admin.find_all("#user").await.is_empty(), "still there");

    admin.find("#forget summary").await.click().await;
    admin
        .find("#forget-confirm")
        .await
        .type_text("u0000001")
        .await;
    admin
        .screenshot(&screenshots(), "user-forget-confirm")
        .await;
    admin.find("#forget-submit").await.click().await;
    admin
        .wait_for(|source| source.contains("id=\"forgotten\""))
        .await;
    let said = admin.find("#forgotten").await.text().await;
    assert!(said.starts_with("u0000001 is forgotten:"), "{said}");
    admin.goto(&page).await;
    admin
        .wait_for(|source| source.contains("No events and no sends for u0000001"))
        .await;
    admin.close().await;
    let export = console
        .nudge()
        .args(["users", "export", "u0000001", "--out", "-"])
        .output()
        .unwrap();
    assert!(!export.status.success(), "nothing left to export");
}
