//! The WeChat connector against the mock: every errcode path, token expiry under load.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use nudge_connectors::wechat::client::WechatConnector;
use nudge_connectors::wechat::mock::{Faults, MockConfig, MockWechat};
use nudge_connectors::wechat::{TokenMode, WechatConfig};
use nudge_connectors::{Connector, Notification, SendError};

async fn mock(config: MockConfig) -> MockWechat {
    MockWechat::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

const SECRET: &str = "mock-secret";

fn connector(mock: &MockWechat, mode: TokenMode) -> WechatConnector {
    connector_with_timeout(mock, mode, 5_000)
}

fn connector_with_timeout(mock: &MockWechat, mode: TokenMode, timeout_ms: u64) -> WechatConnector {
    let config = WechatConfig {
        appid: "wxmock".into(),
        secret_env: "NUDGE_TEST_WECHAT_SECRET".into(),
        api_base: mock.api_base(),
        token_mode: mode,
        miniprogram_state: None,
        lang: None,
        quota_tz: chrono_tz::Asia::Shanghai,
        refresh_ahead_s: 300,
        timeout_ms,
        push_token_env: None,
        push_aes_key_env: None,
        push_previous_aes_key_env: None,
        push_max_age_s: 300,
    };
    WechatConnector::with_secret(&config, SECRET.into()).unwrap()
}

fn cart(user: &str) -> Notification {
    Notification {
        user_id: user.into(),
        template_id: "tmpl_cart_reminder".into(),
        data: BTreeMap::from([
            ("thing1".to_string(), "跑步鞋".to_string()),
            ("amount2".to_string(), "¥299.0".to_string()),
            ("time3".to_string(), "2026年10月31日 21:30".to_string()),
        ]),
        page: Some("pages/cart/index?item=7".into()),
        campaign: "cart".into(),
        send_id: format!("s-{user}"),
        dedup_key: format!("cart:{user}"),
    }
}

#[tokio::test]
async fn a_send_with_a_credit_is_delivered_and_consumes_it() {
    let mock = mock(MockConfig::default()).await;
    mock.grant("o1", "tmpl_cart_reminder", 2);
    let receipt = connector(&mock, TokenMode::Stable)
        .send(&cart("o1"))
        .await
        .unwrap();
    assert!(receipt.provider_id.is_some());
    assert_eq!(mock.credits("o1", "tmpl_cart_reminder"), 1);
    let delivered = mock.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].data["thing1"], "跑步鞋");
    assert_eq!(
        delivered[0].page.as_deref(),
        Some("pages/cart/index?item=7")
    );
}

#[tokio::test]
async fn no_credit_is_a_rejection_that_says_the_credit_is_gone() {
    let mock = mock(MockConfig::default()).await;
    let error = connector(&mock, TokenMode::Stable)
        .send(&cart("o2"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SendError::Rejected {
                code: 43101,
                credit_gone: true,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unknown_template_or_page_misconfigures_the_campaign() {
    let pages = HashSet::from(["pages/index/index".to_string()]);
    let mock = mock(MockConfig {
        pages: Some(pages),
        ..MockConfig::default()
    })
    .await;
    mock.grant("o3", "tmpl_cart_reminder", 5);
    let wechat = connector(&mock, TokenMode::Stable);
    let error = wechat.send(&cart("o3")).await.unwrap_err();
    assert!(
        matches!(error, SendError::Misconfigured { code: 41030, .. }),
        "{error:?}"
    );
    let mut unknown = cart("o3");
    unknown.template_id = "tmpl_nope".into();
    let error = wechat.send(&unknown).await.unwrap_err();
    assert!(
        matches!(error, SendError::Misconfigured { code: 40037, .. }),
        "{error:?}"
    );
    assert_eq!(
        mock.credits("o3", "tmpl_cart_reminder"),
        5,
        "nothing was consumed"
    );
    assert_eq!(
        wechat.answer_codes(),
        [("40037".to_string(), 1), ("41030".to_string(), 1)],
        "each error answer counted under its code, for /metrics"
    );
}

#[tokio::test]
async fn bad_keyword_values_are_caught_before_sending() {
    let mock = mock(MockConfig::default()).await;
    mock.grant("o4", "tmpl_cart_reminder", 1);
    let mut long = cart("o4");
    long.data.insert(
        "thing1".into(),
        "一二三四五六七八九十一二三四五六七八九十一".into(),
    );
    let error = connector(&mock, TokenMode::Stable)
        .send(&long)
        .await
        .unwrap_err();
    match error {
        SendError::Rejected {
            code: 47003,
            reason,
            ..
        } => assert!(
            reason.contains("thing1") && reason.contains("at most 20"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(mock.delivered().is_empty());
}

#[tokio::test]
async fn busy_is_transient_a_server_error_is_unknown_and_the_quota_pauses_the_app() {
    let mock = mock(MockConfig {
        daily_quota: Some(1),
        ..MockConfig::default()
    })
    .await;
    mock.grant("o5", "tmpl_cart_reminder", 3);
    let wechat = connector(&mock, TokenMode::Stable);
    mock.set_faults(Faults {
        busy_share: 1.0,
        ..Faults::default()
    });
    assert!(matches!(
        wechat.send(&cart("o5")).await,
        Err(SendError::Transient(_))
    ));
    // An HTTP 500 may come after WeChat took the message: never resent. See: #18
    mock.set_faults(Faults {
        http500_share: 1.0,
        ..Faults::default()
    });
    assert!(matches!(
        wechat.send(&cart("o5")).await,
        Err(SendError::Unknown(_))
    ));
    mock.set_faults(Faults::default());
    wechat.send(&cart("o5")).await.unwrap();
    match wechat.send(&cart("o5")).await {
        Err(SendError::RateLimited {
            whole_app: true,
            retry_after,
            ..
        }) => assert!(retry_after.as_secs() <= 24 * 3_600),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_answer_is_unknown_not_retried() {
    let mock = mock(MockConfig::default()).await;
    mock.grant("o6", "tmpl_cart_reminder", 1);
    mock.set_faults(Faults {
        drop_share: 1.0,
        ..Faults::default()
    });
    // The answer never completes: the request times out (kept short here) with the message out.
    let error = connector_with_timeout(&mock, TokenMode::Stable, 300)
        .send(&cart("o6"))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Unknown(_)), "{error:?}");
    assert_eq!(
        mock.delivered().len(),
        1,
        "the mock delivered it: a retry would duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_run_causes_one_refresh_not_a_stampede() {
    for mode in [TokenMode::Stable, TokenMode::Classic] {
        let mock = mock(MockConfig::default()).await;
        let wechat = Arc::new(connector(&mock, mode));
        for i in 0..200 {
            mock.grant(&format!("u{i}"), "tmpl_cart_reminder", 2);
        }
        wechat.send(&cart("u0")).await.unwrap();
        assert_eq!(mock.token_fetches(), 1);
        mock.expire_tokens();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let wechat = wechat.clone();
                tokio::spawn(async move { wechat.send(&cart(&format!("u{i}"))).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            mock.token_fetches(),
            2,
            "{mode:?}: one refresh for 200 concurrent sends"
        );
        assert_eq!(mock.delivered().len(), 201);
    }
}

#[tokio::test]
async fn a_wrong_secret_is_a_misconfiguration_that_does_not_leak_it() {
    let mock = mock(MockConfig {
        secret: "another-secret".into(),
        ..MockConfig::default()
    })
    .await;
    let error = connector(&mock, TokenMode::Classic)
        .send(&cart("o7"))
        .await
        .unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(
        matches!(error, SendError::Misconfigured { code: 40013, .. }),
        "{text}"
    );
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
}

#[tokio::test]
async fn templates_are_listed_with_their_keywords() {
    let mock = mock(MockConfig::default()).await;
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/cgi-bin/stable_token", mock.api_base()))
        .json(&serde_json::json!({"grant_type": "client_credential", "appid": "wxmock", "secret": "mock-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listing: serde_json::Value = reqwest::get(format!(
        "{}/wxaapi/newtmpl/gettemplate?access_token={}",
        mock.api_base(),
        token["access_token"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let cart = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["priTmplId"] == "tmpl_cart_reminder")
        .unwrap();
    assert_eq!(
        cart["content"],
        "商品名称:{{thing1.DATA}}\n商品价格:{{amount2.DATA}}\n加购时间:{{time3.DATA}}"
    );
}

#[tokio::test]
async fn templates_sync_reads_keywords_from_the_account() {
    let mock = mock(MockConfig::default()).await;
    let templates = connector(&mock, TokenMode::Stable)
        .templates()
        .await
        .unwrap();
    let cart = templates
        .iter()
        .find(|t| t.id == "tmpl_cart_reminder")
        .unwrap();
    assert_eq!(cart.kind, 2);
    let keywords: Vec<&str> = cart.keywords.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keywords, ["thing1", "amount2", "time3"]);
}

#[tokio::test]
async fn an_invalid_openid_is_rejected_for_that_user_only() {
    let mock = mock(MockConfig {
        default_credits: 1,
        ..MockConfig::default()
    })
    .await;
    let error = connector(&mock, TokenMode::Stable)
        .send(&cart(""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SendError::Rejected {
                code: 40003,
                credit_gone: false,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_mock_names_the_invalid_keyword_as_wechat_does() {
    let mock = mock(MockConfig {
        default_credits: 1,
        ..MockConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}/cgi-bin/stable_token", mock.api_base()))
        .json(&serde_json::json!({"grant_type": "client_credential", "appid": "wxmock", "secret": SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answer: serde_json::Value = http
        .post(format!("{}/cgi-bin/message/subscribe/send", mock.api_base()))
        .query(&[("access_token", token["access_token"].as_str().unwrap())])
        .json(&serde_json::json!({
            "touser": "o1", "template_id": "tmpl_cart_reminder",
            "data": {"thing1": {"value": "ok"}, "amount2": {"value": "lots"}, "time3": {"value": "15:01"}}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errcode"], 47003);
    assert_eq!(
        answer["errmsg"],
        "argument invalid! data.amount2.value invalid"
    );
    assert!(mock.delivered().is_empty());
}

// See: #18 (a gateway's 502 after WeChat accepted the message must not be resent)
#[tokio::test]
async fn a_gateway_error_after_delivery_is_unknown_not_retried() {
    let mock = mock(MockConfig::default()).await;
    mock.grant("o7", "tmpl_cart_reminder", 2);
    mock.set_faults(Faults {
        gateway_502_share: 1.0,
        ..Faults::default()
    });
    let error = connector(&mock, TokenMode::Stable)
        .send(&cart("o7"))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Unknown(_)), "{error:?}");
    assert_eq!(mock.delivered().len(), 1, "WeChat had taken it");
}

// See: #18 (a page the rule built badly is that send's failure, not the campaign's)
#[tokio::test]
async fn a_malformed_page_fails_that_send_only() {
    let mock = mock(MockConfig::default()).await;
    mock.grant("o8", "tmpl_cart_reminder", 1);
    let mut bad = cart("o8");
    bad.page = Some("pages/cart/index?item=red shoe".into());
    let error = connector(&mock, TokenMode::Stable)
        .send(&bad)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SendError::Rejected { code: 41030, .. }),
        "{error:?}"
    );
    assert!(mock.delivered().is_empty());
}
