//! A mock of WeChat's API that behaves like WeChat, on loopback: tokens (classic and stable, with
//! expiry), `subscribe/send` with a credit ledger and WeChat's errcodes, `gettemplate`, a daily
//! quota, fault injection, and an admin API to grant credits and read every delivered message.
//! Used by the tests and by `nudge dev mock-wechat`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::keywords::{self, KeywordType};

/// A template the mock knows: id, title and keywords in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MockTemplate {
    pub id: String,
    pub title: String,
    /// (label, keyword) pairs, e.g. ("商品名称", "thing1").
    pub keywords: Vec<(String, String)>,
}

/// Share of requests that fail in each way, and added latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer errcode -1 (system busy).
    pub busy_share: f64,
    /// Answer HTTP 500.
    pub http500_share: f64,
    /// Deliver, then drop the connection without answering.
    pub drop_share: f64,
    /// Deliver, then answer HTTP 502 as a gateway in front of WeChat would when WeChat's answer
    /// did not reach it.
    pub gateway_502_share: f64,
    pub latency_ms: u64,
}

/// How the mock is set up.
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub appid: String,
    pub secret: String,
    pub token_ttl: Duration,
    pub templates: Vec<MockTemplate>,
    /// Pages of the "released" mini-program; `None` accepts any page.
    pub pages: Option<HashSet<String>>,
    /// Sends allowed per day before 45009.
    pub daily_quota: Option<u64>,
    pub faults: Faults,
    pub seed: u64,
    /// Credits every (openid, template) pair starts with (0: only granted credits count).
    pub default_credits: i64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            appid: "wxmock".into(),
            secret: "mock-secret".into(),
            token_ttl: Duration::from_secs(7_200),
            templates: default_templates(),
            pages: None,
            daily_quota: None,
            faults: Faults::default(),
            seed: 1,
            default_credits: 0,
        }
    }
}

/// The example templates the quickstart's campaigns use.
pub fn default_templates() -> Vec<MockTemplate> {
    let template = |id: &str, title: &str, keywords: &[(&str, &str)]| MockTemplate {
        id: id.into(),
        title: title.into(),
        keywords: keywords
            .iter()
            .map(|(label, key)| (label.to_string(), key.to_string()))
            .collect(),
    };
    vec![
        template(
            "tmpl_cart_reminder",
            "购物车提醒",
            &[
                ("商品名称", "thing1"),
                ("商品价格", "amount2"),
                ("加购时间", "time3"),
            ],
        ),
        template(
            "tmpl_order_shipped",
            "订单发货通知",
            &[
                ("订单号", "character_string1"),
                ("快递公司", "thing2"),
                ("快递单号", "character_string3"),
            ],
        ),
        template(
            "tmpl_daily_checkin",
            "签到提醒",
            &[
                ("活动名称", "thing1"),
                ("提醒内容", "thing2"),
                ("日期", "date3"),
            ],
        ),
        template(
            "tmpl_win_back",
            "上新通知",
            &[("上新内容", "thing1"), ("温馨提示", "thing2")],
        ),
    ]
}

/// A message the mock accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    pub msgid: u64,
    pub openid: String,
    pub template_id: String,
    pub page: Option<String>,
    pub data: BTreeMap<String, String>,
}

/// One message as a send request names it: WeChat has no idempotency key, so two requests with
/// the same user, template and page (nudge's pages carry the send's token) are the same message
/// sent twice, whether WeChat delivered both or refused the second for want of a credit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageIdentity {
    pub openid: String,
    pub template_id: String,
    pub page: Option<String>,
}

#[derive(Default)]
struct Ledger {
    /// Every `subscribe/send` request that reached the mock, refused ones included, by the
    /// message it names.
    requests: HashMap<MessageIdentity, u64>,
    tokens: HashMap<String, Instant>,
    stable: Option<String>,
    credits: HashMap<(String, String), i64>,
    delivered: Vec<Delivered>,
    sent_today: u64,
    token_fetches: u64,
    next: u64,
}

struct Mock {
    config: MockConfig,
    ledger: Mutex<Ledger>,
    rng: Mutex<rand::rngs::StdRng>,
    faults: Mutex<Faults>,
}

/// A running mock. Dropping it does not stop the server; it stops with the runtime.
#[derive(Clone)]
pub struct MockWechat {
    pub addr: SocketAddr,
    mock: Arc<Mock>,
}

impl MockWechat {
    /// Starts the mock on `addr` (use `127.0.0.1:0` for a free port).
    pub async fn start(config: MockConfig, addr: SocketAddr) -> std::io::Result<MockWechat> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mock = Arc::new(Mock {
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(config.seed)),
            faults: Mutex::new(config.faults.clone()),
            ledger: Mutex::new(Ledger {
                next: 1_000_000,
                ..Ledger::default()
            }),
            config,
        });
        let app = Router::new()
            .route("/cgi-bin/token", get(classic_token))
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/message/subscribe/send", post(send))
            .route("/wxaapi/newtmpl/gettemplate", get(get_templates))
            .route("/admin/credits", post(grant))
            .route("/admin/delivered", get(delivered))
            .route("/admin/expire_tokens", post(expire_tokens))
            .route("/admin/stats", get(stats))
            .route("/admin/requests", get(requests))
            .with_state(mock.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockWechat { addr, mock })
    }

    /// The base URL to give a connector's `api_base`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn grant(&self, openid: &str, template_id: &str, count: i64) {
        let mut ledger = self.mock.ledger.lock().unwrap();
        *ledger
            .credits
            .entry((openid.into(), template_id.into()))
            .or_default() += count;
    }

    pub fn credits(&self, openid: &str, template_id: &str) -> i64 {
        self.mock
            .ledger
            .lock()
            .unwrap()
            .credits
            .get(&(openid.into(), template_id.into()))
            .copied()
            .unwrap_or(0)
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.mock.ledger.lock().unwrap().delivered.clone()
    }

    /// How many send requests named each message, refused ones included (`GET
    /// /admin/requests`).
    pub fn requests(&self) -> Vec<(MessageIdentity, u64)> {
        requests_of(&self.mock.ledger.lock().unwrap())
    }

    /// Tokens fetched so far (to check that refreshes do not stampede).
    pub fn token_fetches(&self) -> u64 {
        self.mock.ledger.lock().unwrap().token_fetches
    }

    /// Expires every token now, as if their two hours had passed.
    pub fn expire_tokens(&self) {
        let mut ledger = self.mock.ledger.lock().unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        ledger.tokens.values_mut().for_each(|expiry| *expiry = past);
    }

    /// The ledger (credits, delivered messages) as JSON, for `--state FILE`.
    pub fn state(&self) -> serde_json::Value {
        let ledger = self.mock.ledger.lock().unwrap();
        let credits: Vec<(&String, &String, i64)> = ledger
            .credits
            .iter()
            .map(|((o, t), n)| (o, t, *n))
            .collect();
        json!({ "credits": credits, "delivered": ledger.delivered, "next": ledger.next,
                "sent_today": ledger.sent_today, "requests": requests_of(&ledger) })
    }

    /// Restores a ledger written by [`MockWechat::state`].
    pub fn restore(&self, state: &serde_json::Value) -> Result<(), String> {
        let credits: Vec<(String, String, i64)> = serde_json::from_value(state["credits"].clone())
            .map_err(|e| format!("credits: {e}"))?;
        let delivered: Vec<Delivered> = serde_json::from_value(state["delivered"].clone())
            .map_err(|e| format!("delivered: {e}"))?;
        // Absent from states written before requests were counted.
        let requests: Vec<(MessageIdentity, u64)> =
            serde_json::from_value(state["requests"].clone()).unwrap_or_default();
        let mut ledger = self.mock.ledger.lock().unwrap();
        ledger.requests = requests.into_iter().collect();
        ledger.credits = credits.into_iter().map(|(o, t, n)| ((o, t), n)).collect();
        ledger.delivered = delivered;
        ledger.next = state["next"].as_u64().unwrap_or(ledger.next);
        ledger.sent_today = state["sent_today"].as_u64().unwrap_or(0);
        Ok(())
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.mock.faults.lock().unwrap() = faults;
    }
}

fn errcode(code: i64, message: &str) -> Response {
    Json(json!({ "errcode": code, "errmsg": message })).into_response()
}

fn issue_token(mock: &Mock, ledger: &mut Ledger) -> Value {
    ledger.token_fetches += 1;
    ledger.next += 1;
    let token = format!("MOCKTOKEN{}", ledger.next);
    ledger
        .tokens
        .insert(token.clone(), Instant::now() + mock.config.token_ttl);
    json!({ "access_token": token, "expires_in": mock.config.token_ttl.as_secs() })
}

#[derive(Deserialize)]
struct TokenQuery {
    appid: String,
    secret: String,
}

async fn classic_token(State(mock): State<Arc<Mock>>, Query(query): Query<TokenQuery>) -> Response {
    if query.appid != mock.config.appid || query.secret != mock.config.secret {
        return errcode(40013, "invalid appid or secret");
    }
    let mut ledger = mock.ledger.lock().unwrap();
    // A classic fetch invalidates every earlier token.
    ledger.tokens.clear();
    Json(issue_token(&mock, &mut ledger)).into_response()
}

async fn stable_token(State(mock): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    if body["appid"] != mock.config.appid.as_str() || body["secret"] != mock.config.secret.as_str()
    {
        return errcode(40013, "invalid appid or secret");
    }
    let mut ledger = mock.ledger.lock().unwrap();
    if let Some(current) = ledger.stable.clone()
        && ledger
            .tokens
            .get(&current)
            .is_some_and(|expiry| *expiry > Instant::now())
    {
        let remaining = ledger.tokens[&current]
            .saturating_duration_since(Instant::now())
            .as_secs();
        return Json(json!({ "access_token": current, "expires_in": remaining })).into_response();
    }
    let answer = issue_token(&mock, &mut ledger);
    ledger.stable = answer["access_token"].as_str().map(str::to_string);
    Json(answer).into_response()
}

#[derive(Deserialize)]
struct AccessQuery {
    access_token: String,
}

fn check_token(ledger: &Ledger, token: &str) -> Option<Response> {
    match ledger.tokens.get(token) {
        None => Some(errcode(
            40001,
            "invalid credential, access_token is invalid or not latest",
        )),
        Some(expiry) if *expiry <= Instant::now() => Some(errcode(42001, "access_token expired")),
        Some(_) => None,
    }
}

async fn send(
    State(mock): State<Arc<Mock>>,
    Query(query): Query<AccessQuery>,
    Json(body): Json<Value>,
) -> Response {
    // Counted before anything can refuse it: a duplicate is a second request, delivered or not.
    let identity = MessageIdentity {
        openid: body["touser"].as_str().unwrap_or_default().to_string(),
        template_id: body["template_id"].as_str().unwrap_or_default().to_string(),
        page: body["page"].as_str().map(str::to_string),
    };
    *mock
        .ledger
        .lock()
        .unwrap()
        .requests
        .entry(identity)
        .or_default() += 1;
    let faults = mock.faults.lock().unwrap().clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let (busy, http500) = {
        let mut rng = mock.rng.lock().unwrap();
        (
            rng.random_bool(faults.busy_share.clamp(0.0, 1.0)),
            rng.random_bool(faults.http500_share.clamp(0.0, 1.0)),
        )
    };
    if http500 {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut ledger = mock.ledger.lock().unwrap();
    if let Some(refused) = check_token(&ledger, &query.access_token) {
        return refused;
    }
    if busy {
        return errcode(-1, "system error");
    }
    let openid = body["touser"].as_str().unwrap_or_default().to_string();
    let template_id = body["template_id"].as_str().unwrap_or_default().to_string();
    if openid.is_empty() {
        return errcode(40003, "invalid openid");
    }
    let Some(template) = mock.config.templates.iter().find(|t| t.id == template_id) else {
        return errcode(40037, "invalid template_id");
    };
    let page = body["page"].as_str().map(str::to_string);
    if let (Some(pages), Some(page)) = (&mock.config.pages, &page) {
        let path = page.split('?').next().unwrap_or_default();
        if !pages.contains(path) {
            return errcode(41030, "invalid page");
        }
    }
    let mut data = BTreeMap::new();
    for (_, keyword) in &template.keywords {
        let value = body["data"][keyword]["value"].as_str().unwrap_or_default();
        let enum_values = if KeywordType::of(keyword) == Some(KeywordType::Enum) {
            vec![value.to_string()]
        } else {
            Vec::new()
        };
        if keywords::check_value(keyword, value, &enum_values).is_err() {
            return errcode(
                47003,
                &format!("argument invalid! data.{keyword}.value invalid"),
            );
        }
        data.insert(keyword.clone(), value.to_string());
    }
    if mock
        .config
        .daily_quota
        .is_some_and(|quota| ledger.sent_today >= quota)
    {
        return errcode(45009, "reach max api daily quota limit");
    }
    let key = (openid.clone(), template_id.clone());
    let credit = ledger
        .credits
        .get(&key)
        .copied()
        .unwrap_or(mock.config.default_credits);
    if credit <= 0 {
        return errcode(43101, "user refuse to accept the msg");
    }
    ledger.credits.insert(key, credit - 1);
    ledger.sent_today += 1;
    ledger.next += 1;
    let msgid = ledger.next;
    ledger.delivered.push(Delivered {
        msgid,
        openid,
        template_id,
        page,
        data,
    });
    drop(ledger);
    let (dropped, gateway) = {
        let mut rng = mock.rng.lock().unwrap();
        (
            rng.random_bool(faults.drop_share.clamp(0.0, 1.0)),
            rng.random_bool(faults.gateway_502_share.clamp(0.0, 1.0)),
        )
    };
    if gateway {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    if dropped {
        // Delivered, but the answer never arrives: the caller cannot know.
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-length", "100")
            .body(axum::body::Body::from("{"))
            .unwrap();
    }
    Json(json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid })).into_response()
}

async fn get_templates(
    State(mock): State<Arc<Mock>>,
    Query(query): Query<AccessQuery>,
) -> Response {
    let ledger = mock.ledger.lock().unwrap();
    if let Some(refused) = check_token(&ledger, &query.access_token) {
        return refused;
    }
    let data: Vec<Value> = mock
        .config
        .templates
        .iter()
        .map(|t| {
            let content: Vec<String> = t.keywords.iter().map(|(label, key)| format!("{label}:{{{{{key}.DATA}}}}")).collect();
            json!({ "priTmplId": t.id, "title": t.title, "content": content.join("\n"), "example": "", "type": 2 })
        })
        .collect();
    Json(json!({ "errcode": 0, "errmsg": "ok", "data": data })).into_response()
}

#[derive(Deserialize)]
struct Grant {
    openid: String,
    template_id: String,
    #[serde(default = "one")]
    count: i64,
}

fn one() -> i64 {
    1
}

async fn grant(State(mock): State<Arc<Mock>>, Json(grant): Json<Grant>) -> Response {
    let mut ledger = mock.ledger.lock().unwrap();
    *ledger
        .credits
        .entry((grant.openid, grant.template_id))
        .or_default() += grant.count;
    Json(json!({ "ok": true })).into_response()
}

async fn delivered(State(mock): State<Arc<Mock>>) -> Response {
    Json(mock.ledger.lock().unwrap().delivered.clone()).into_response()
}

async fn expire_tokens(State(mock): State<Arc<Mock>>) -> Response {
    let mut ledger = mock.ledger.lock().unwrap();
    let past = Instant::now() - Duration::from_secs(1);
    ledger.tokens.values_mut().for_each(|expiry| *expiry = past);
    Json(json!({ "ok": true })).into_response()
}

async fn stats(State(mock): State<Arc<Mock>>) -> Response {
    let ledger = mock.ledger.lock().unwrap();
    let requests: u64 = ledger.requests.values().sum();
    Json(json!({
        "token_fetches": ledger.token_fetches,
        "delivered": ledger.delivered.len(),
        "requests": requests,
    }))
    .into_response()
}

fn requests_of(ledger: &Ledger) -> Vec<(MessageIdentity, u64)> {
    let mut requests: Vec<(MessageIdentity, u64)> = ledger
        .requests
        .iter()
        .map(|(identity, count)| (identity.clone(), *count))
        .collect();
    requests.sort();
    requests
}

async fn requests(State(mock): State<Arc<Mock>>) -> Response {
    let requests = requests_of(&mock.ledger.lock().unwrap());
    let rows: Vec<Value> = requests
        .into_iter()
        .map(|(identity, count)| {
            json!({ "openid": identity.openid, "template_id": identity.template_id,
                    "page": identity.page, "count": count })
        })
        .collect();
    Json(rows).into_response()
}
