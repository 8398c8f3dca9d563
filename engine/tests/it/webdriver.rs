//! Just enough of the W3C WebDriver protocol to drive Debian's Chromium through its
//! ChromeDriver (`/usr/bin/chromedriver`) on loopback: sessions, navigation, elements, script,
//! screenshots. A missing browser or driver fails the test that asks for one; nothing skips.

use std::time::Duration;

use serde_json::{Value, json};

use super::support::{SpawnGuarded, Spawned};

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process, killed with the browsers it started when dropped (a failing test
/// leaves no Chromium behind).
pub struct Driver {
    base: String,
    process: Spawned,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.process.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
    }
}

/// A free loopback port (bound and released: the driver takes it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    /// Starts `chromedriver` (Debian's `chromium-driver` package) and waits until it is ready.
    pub async fn start() -> Driver {
        let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect(
                "chromedriver is missing: install Debian's chromium and chromium-driver packages (.ci/run does)",
            );
        let port = free_port();
        // Its own process group: dropping the driver kills the browsers it started too.
        let process = std::os::unix::process::CommandExt::process_group(
            &mut std::process::Command::new(binary),
            0,
        )
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn_guarded();
        let driver = Driver {
            base: format!("http://127.0.0.1:{port}"),
            process,
        };
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        loop {
            let ready = client
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return driver;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A headless Chromium window whose `Accept-Language` is `lang`.
    pub async fn browser(&self, lang: &str) -> Browser {
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("chromium is missing: install Debian's chromium package (.ci/run does)");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--lang={lang}"),
                ],
                "prefs": {"intl.accept_languages": lang},
            },
        }}});
        let client = reqwest::Client::new();
        let answer: Value = client
            .post(format!("{}/session", self.base))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Browser {
            session: format!("{}/session/{id}", self.base),
            client,
            _profile: profile,
        }
    }
}

/// One browser window.
pub struct Browser {
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// An element on the current page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("WebDriver {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The page's HTML as the browser holds it.
    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits (up to 10 s) until the current URL satisfies `done`: a click that submits a form
    /// returns before the next page has loaded.
    pub async fn wait_for_url(&self, done: impl Fn(&str) -> bool) {
        let started = std::time::Instant::now();
        loop {
            let url = self.url().await;
            if done(&url) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still at {url} after 10 s: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 10 s) until the page's HTML satisfies `done`.
    pub async fn wait_for(&self, done: impl Fn(&str) -> bool) {
        let started = std::time::Instant::now();
        loop {
            let source = self.source().await;
            if done(&source) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the page at {} did not change as expected in 10 s: {source}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The elements matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Element {
                browser: self,
                id: e[ELEMENT].as_str().unwrap().to_string(),
            })
            .collect()
    }

    /// The one element matching a CSS selector (panics when there is none).
    pub async fn find(&self, css: &str) -> Element<'_> {
        let mut all = self.find_all(css).await;
        assert!(
            !all.is_empty(),
            "no element matches {css} on {}",
            self.url().await
        );
        all.remove(0)
    }

    /// Runs `script` in the page (WebDriver's own channel: the page's CSP does not apply).
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a PNG of the window as `dir/name.png`.
    pub async fn screenshot(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The value of the page's cookie `name` (HttpOnly ones too: the driver sees them all).
    pub async fn cookie(&self, name: &str) -> String {
        self.call(reqwest::Method::GET, &format!("/cookie/{name}"), None)
            .await["value"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn close(self) {
        let _ = self.client.delete(&self.session).send().await;
    }
}

impl Element<'_> {
    pub async fn click(&self) {
        self.browser
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/click", self.id),
                Some(json!({})),
            )
            .await;
    }

    pub async fn type_text(&self, text: &str) {
        self.browser
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/value", self.id),
                Some(json!({"text": text})),
            )
            .await;
    }

    pub async fn text(&self) -> String {
        self.browser
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/text", self.id),
                None,
            )
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A DOM property (`disabled`, `value`...).
    pub async fn property(&self, name: &str) -> Value {
        self.browser
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/property/{name}", self.id),
                None,
            )
            .await
    }
}
