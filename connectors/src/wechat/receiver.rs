//! WeChat's message push for one mini-program: the URL check (GET), and subscription events in
//! plain or safe mode (POST), XML or JSON, turned into [`Fact`]s.

use std::collections::BTreeMap;

use super::WechatConfig;
use super::crypto::{self, AesKey};
use super::push::{self, PushError, PushKind};
use crate::inbound::{Fact, PushRefused, PushRequest, Received, Receiver};

/// Token, keys and app id of one mini-program's message push; never printed.
pub struct WechatReceiver {
    appid: String,
    token: String,
    /// The current EncodingAESKey, then the previous one during a rotation.
    keys: Vec<AesKey>,
    /// Pushes stamped further than this from now are refused as replays; `None` takes any.
    max_age_s: Option<i64>,
}

impl WechatReceiver {
    /// `None` when the connector has no `push_token_env`: it takes no pushes.
    pub fn from_config(config: &WechatConfig) -> Result<Option<WechatReceiver>, String> {
        let Some(token_env) = &config.push_token_env else {
            return Ok(None);
        };
        let read = |name: &str| {
            std::env::var(name).map_err(|_| {
                format!(
                    "the environment variable {name} (named in the wechat connector) is not set"
                )
            })
        };
        let token = read(token_env)?;
        let mut keys = Vec::new();
        for name in [&config.push_aes_key_env, &config.push_previous_aes_key_env]
            .into_iter()
            .flatten()
        {
            keys.push(AesKey::parse(&read(name)?).map_err(|error| format!("{name}: {error}"))?);
        }
        let mut receiver = WechatReceiver::new(&config.appid, token, keys);
        receiver.max_age_s = (config.push_max_age_s > 0).then_some(config.push_max_age_s as i64);
        Ok(Some(receiver))
    }

    pub fn new(appid: &str, token: String, keys: Vec<AesKey>) -> WechatReceiver {
        WechatReceiver {
            appid: appid.to_string(),
            token,
            keys,
            max_age_s: Some(300),
        }
    }

    /// Refuses a push stamped too far from now: a signed request recorded and sent again.
    fn fresh(&self, query: &BTreeMap<String, String>) -> Result<(), PushRefused> {
        let Some(max) = self.max_age_s else {
            return Ok(());
        };
        let stamped = query
            .get("timestamp")
            .and_then(|t| t.trim().parse::<i64>().ok())
            .ok_or_else(|| PushRefused::Unauthorized("the push has no timestamp".into()))?;
        let age = chrono::Utc::now().timestamp() - stamped;
        if age.abs() > max {
            return Err(PushRefused::Unauthorized(format!(
                "the push is stamped {age} s from now, over push_max_age_s ({max}): a replay, or a clock that is off"
            )));
        }
        Ok(())
    }

    fn signed(&self, query: &BTreeMap<String, String>) -> Result<(), PushRefused> {
        let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
        if push::signature_is_valid(
            &self.token,
            field("timestamp"),
            field("nonce"),
            field("signature"),
        ) {
            Ok(())
        } else {
            Err(PushRefused::Unauthorized(
                "signature does not match the token".into(),
            ))
        }
    }

    /// The message of a safe-mode body: its `Encrypt`, signed with `msg_signature`, opened.
    fn open(&self, query: &BTreeMap<String, String>, body: &str) -> Result<String, PushRefused> {
        let encrypted = push::encrypted_field(body)
            .map_err(|error| PushRefused::Malformed(error.to_string()))?;
        let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
        let expected =
            crypto::msg_signature(&self.token, field("timestamp"), field("nonce"), &encrypted);
        if !expected.eq_ignore_ascii_case(field("msg_signature")) {
            return Err(PushRefused::Unauthorized(
                "msg_signature does not match the token".into(),
            ));
        }
        if self.keys.is_empty() {
            return Err(PushRefused::Malformed(
                "an encrypted push, and no push_aes_key_env is configured for this connector"
                    .into(),
            ));
        }
        let mut last = None;
        for key in &self.keys {
            match crypto::decrypt(key, &encrypted, &self.appid) {
                Ok(message) => return Ok(message),
                Err(error) => last = Some(error),
            }
        }
        Err(PushRefused::Malformed(
            last.map(|e| e.to_string()).unwrap_or_default(),
        ))
    }
}

impl Receiver for WechatReceiver {
    fn receive(&self, request: PushRequest<'_>) -> Result<Received, PushRefused> {
        self.fresh(request.query)?;
        if request.is_get {
            self.signed(request.query)?;
            return Ok(Received::Echo(
                request.query.get("echostr").cloned().unwrap_or_default(),
            ));
        }
        let body = std::str::from_utf8(request.body)
            .map_err(|_| PushRefused::Malformed("the body is not UTF-8".into()))?;
        let safe = request
            .query
            .get("encrypt_type")
            .is_some_and(|t| t == "aes")
            || request.query.contains_key("msg_signature");
        let message = if safe {
            self.open(request.query, body)?
        } else {
            self.signed(request.query)?;
            body.to_string()
        };
        let event = match push::parse(&message) {
            Ok(event) => event,
            // Other pushes (customer-service messages, ...) are not nudge's: taken, ignored.
            Err(PushError::NotSubscription(_)) => return Ok(Received::Facts(Vec::new())),
            Err(error) => return Err(PushRefused::Malformed(error.to_string())),
        };
        let ts_ms = event.create_time.saturating_mul(1_000);
        let facts = event
            .items
            .into_iter()
            .filter_map(|item| match event.kind {
                PushKind::Popup | PushKind::Change => Some(Fact::Subscription {
                    event_id: format!(
                        "wechat-push:{}:{}:{:?}:{}",
                        event.openid, event.create_time, event.kind, item.template_id
                    ),
                    user_id: event.openid.clone(),
                    status: item.status?,
                    template_id: item.template_id,
                    ts_ms,
                }),
                PushKind::Sent => Some(Fact::Delivery {
                    provider_id: item.msg_id?,
                    code: item.error_code.unwrap_or_default(),
                    status: item.error_status,
                }),
            })
            .collect();
        Ok(Received::Facts(facts))
    }

    fn acknowledgement(&self) -> &'static str {
        "success"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_url_check_echoes_only_with_the_published_signature() {
        let mut receiver = WechatReceiver::new("wx1", "AAAAA".into(), Vec::new());
        // The note's vector is stamped in 2024: a receiver with the default window refuses it.
        let stale = PushRequest {
            is_get: true,
            query: &query(&[
                ("timestamp", "1714036504"),
                ("nonce", "1514711492"),
                ("signature", "f464b24fc39322e44b38aa78f5edd27bd1441696"),
            ]),
            body: b"",
        };
        let refused = receiver.receive(stale).unwrap_err().to_string();
        assert!(refused.contains("push_max_age_s"), "{refused}");
        receiver.max_age_s = None;
        let good = query(&[
            ("timestamp", "1714036504"),
            ("nonce", "1514711492"),
            ("signature", "f464b24fc39322e44b38aa78f5edd27bd1441696"),
            ("echostr", "hello"),
        ]);
        let request = |query| PushRequest {
            is_get: true,
            query,
            body: b"",
        };
        assert_eq!(
            receiver.receive(request(&good)),
            Ok(Received::Echo("hello".into()))
        );
        let mut bad = good.clone();
        bad.insert("nonce".into(), "1514711493".into());
        assert!(matches!(
            receiver.receive(request(&bad)),
            Err(PushRefused::Unauthorized(_))
        ));
    }

    #[test]
    fn a_fresh_safe_mode_push_built_here_is_opened_and_a_stale_one_refused() {
        let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        let receiver = WechatReceiver::new("wxapp", "tok".into(), vec![key.clone()]);
        let message = r#"<xml><FromUserName>o1</FromUserName><CreateTime>1800000000</CreateTime><Event>subscribe_msg_popup_event</Event><List><TemplateId>T1</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List></xml>"#;
        let sealed = crypto::encrypt(&key, message, "wxapp", [7; 16]);
        let body = format!("<xml><Encrypt><![CDATA[{sealed}]]></Encrypt></xml>");
        let push = |timestamp: String| {
            let signature = crypto::msg_signature("tok", &timestamp, "n1", &sealed);
            query(&[
                ("timestamp", &timestamp),
                ("nonce", "n1"),
                ("encrypt_type", "aes"),
                ("msg_signature", &signature),
            ])
        };
        let now = push(chrono::Utc::now().timestamp().to_string());
        let received = receiver.receive(PushRequest {
            is_get: false,
            query: &now,
            body: body.as_bytes(),
        });
        let Ok(Received::Facts(facts)) = received else {
            panic!("{received:?}");
        };
        assert!(matches!(
            &facts[..],
            [Fact::Subscription { user_id, template_id, status, .. }]
                if user_id == "o1" && template_id == "T1" && status == "accept"
        ));
        let hour_ago = push((chrono::Utc::now().timestamp() - 3_600).to_string());
        let stale = receiver.receive(PushRequest {
            is_get: false,
            query: &hour_ago,
            body: body.as_bytes(),
        });
        assert!(
            matches!(stale, Err(PushRefused::Unauthorized(_))),
            "{stale:?}"
        );
    }
}
