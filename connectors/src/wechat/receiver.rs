//! WeChat's message push for one mini-program: the URL check (GET), and subscription events in
//! plain or safe mode (POST), XML or JSON, turned into [`Fact`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

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
    max_age_s: Option<u64>,
    /// The pushes verified lately, by (timestamp, nonce): a SHA-256 of the body each came
    /// with. The same query again with the same body is WeChat retrying (stored once anyway);
    /// with another body it is a replay of a seen signature, refused.
    seen: Mutex<HashMap<(String, String), [u8; 32]>>,
}

/// How many verified pushes [`WechatReceiver`] remembers before it forgets those stamped
/// outside the replay window (and, past twice this, the older half).
const SEEN_PUSHES: usize = 50_000;

/// Whether `token` is a message-push Token WeChat's console accepts: 3 to 32 letters and
/// digits.
pub fn token_is_valid(token: &str) -> bool {
    (3..=32).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric())
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
        // A mounted secret often ends with a newline: it is not part of the value.
        let token = read(token_env)?.trim().to_string();
        if !token_is_valid(&token) {
            return Err(format!(
                "the push Token in {token_env} must be 3 to 32 letters and digits (WeChat's rule; an empty or short token lets anyone sign pushes): set it to the Token of the mini-program console"
            ));
        }
        let mut keys = Vec::new();
        for name in [&config.push_aes_key_env, &config.push_previous_aes_key_env]
            .into_iter()
            .flatten()
        {
            keys.push(AesKey::parse(&read(name)?).map_err(|error| format!("{name}: {error}"))?);
        }
        let mut receiver = WechatReceiver::new(&config.appid, token, keys);
        receiver.max_age_s = (config.push_max_age_s > 0).then_some(config.push_max_age_s);
        Ok(Some(receiver))
    }

    pub fn new(appid: &str, token: String, keys: Vec<AesKey>) -> WechatReceiver {
        WechatReceiver {
            appid: appid.to_string(),
            token,
            keys,
            max_age_s: Some(300),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether pushes must come in safe mode (an EncodingAESKey is configured).
    pub fn safe_mode_only(&self) -> bool {
        !self.keys.is_empty()
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
        let now = chrono::Utc::now().timestamp();
        if now.abs_diff(stamped) > max {
            let age = i128::from(now) - i128::from(stamped);
            return Err(PushRefused::Unauthorized(format!(
                "the push is stamped {age} s from now, over push_max_age_s ({max}): a replay, or a clock that is off"
            )));
        }
        Ok(())
    }

    /// Remembers a verified push's (timestamp, nonce) with its body; refuses the pair seen
    /// before with another body (a signature copied from a log onto a forged body).
    fn first_use(&self, query: &BTreeMap<String, String>, body: &[u8]) -> Result<(), PushRefused> {
        let field = |name: &str| query.get(name).cloned().unwrap_or_default();
        let key = (field("timestamp"), field("nonce"));
        let digest: [u8; 32] = Sha256::digest(body).into();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match seen.get(&key) {
            Some(known) if *known == digest => return Ok(()),
            Some(_) => {
                return Err(PushRefused::Unauthorized(
                    "this timestamp and nonce were already used with another body: a replay".into(),
                ));
            }
            None => {}
        }
        if seen.len() >= SEEN_PUSHES {
            let now = chrono::Utc::now().timestamp();
            let max = self.max_age_s.unwrap_or(u64::MAX);
            seen.retain(|(stamp, _), _| {
                stamp
                    .trim()
                    .parse::<i64>()
                    .is_ok_and(|stamp| now.abs_diff(stamp) <= max)
            });
            if seen.len() >= 2 * SEEN_PUSHES {
                // No window (push_max_age_s = 0): forget the older half.
                let mut stamps: Vec<i64> = seen
                    .keys()
                    .map(|(stamp, _)| stamp.trim().parse().unwrap_or(i64::MIN))
                    .collect();
                stamps.sort_unstable();
                let median = stamps[stamps.len() / 2];
                seen.retain(|(stamp, _), _| stamp.trim().parse().unwrap_or(i64::MIN) >= median);
            }
        }
        seen.insert(key, digest);
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
        if !push::hex_eq(&expected, field("msg_signature")) {
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
    /// Before the body is read: the stamp is fresh, and the query's `signature` (sent in every
    /// mode) is right when present; a safe-mode push may rest on `msg_signature` alone, which
    /// signs the body and is checked once it is read.
    fn admit(&self, query: &BTreeMap<String, String>) -> Result<(), PushRefused> {
        self.fresh(query)?;
        if query.contains_key("signature") || !query.contains_key("msg_signature") {
            self.signed(query)?;
        }
        Ok(())
    }

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
            // Compatible mode sends the plain fields beside `Encrypt`: only the sealed part,
            // which `msg_signature` signs, is read.
            self.open(request.query, body)?
        } else if self.safe_mode_only() {
            // `signature` signs the token, timestamp and nonce, not the body: with a key
            // configured, a plain body could be anyone's.
            return Err(PushRefused::Unauthorized(
                "an EncodingAESKey is configured, so pushes must come in safe or compatible mode (msg_signature and Encrypt); a plain push is refused".into(),
            ));
        } else {
            self.signed(request.query)?;
            body.to_string()
        };
        self.first_use(request.query, request.body)?;
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

    fn signed_query(token: &str, timestamp: &str, nonce: &str) -> BTreeMap<String, String> {
        let mut parts = [token, timestamp, nonce];
        parts.sort_unstable();
        let signature: String = sha1::Sha1::digest(parts.concat().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        query(&[
            ("timestamp", timestamp),
            ("nonce", nonce),
            ("signature", &signature),
        ])
    }

    const POPUP: &str = r#"<xml><FromUserName>o1</FromUserName><CreateTime>1800000000</CreateTime><Event>subscribe_msg_popup_event</Event><List><TemplateId>T1</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List></xml>"#;

    #[test]
    fn with_a_key_configured_a_plain_push_is_refused_even_when_signed() {
        let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        let receiver = WechatReceiver::new("wxapp", "tok123".into(), vec![key]);
        let now = chrono::Utc::now().timestamp().to_string();
        let query = signed_query("tok123", &now, "n1");
        assert!(receiver.admit(&query).is_ok(), "the query itself is signed");
        let refused = receiver.receive(PushRequest {
            is_get: false,
            query: &query,
            body: POPUP.as_bytes(),
        });
        assert!(
            matches!(&refused, Err(PushRefused::Unauthorized(m)) if m.contains("safe")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_seen_timestamp_and_nonce_take_only_the_body_they_came_with() {
        let receiver = WechatReceiver::new("wxapp", "tok123".into(), Vec::new());
        let now = chrono::Utc::now().timestamp().to_string();
        let query = signed_query("tok123", &now, "n2");
        let push = |body: &'static str| {
            receiver.receive(PushRequest {
                is_get: false,
                query: &query,
                body: body.as_bytes(),
            })
        };
        assert!(matches!(push(POPUP), Ok(Received::Facts(f)) if f.len() == 1));
        // WeChat retrying the same push: taken again (its event id makes it a duplicate).
        assert!(matches!(push(POPUP), Ok(Received::Facts(f)) if f.len() == 1));
        let forged: &'static str = Box::leak(POPUP.replace("o1", "o2").into_boxed_str());
        assert!(matches!(push(forged), Err(PushRefused::Unauthorized(_))));
    }

    #[test]
    fn an_unsigned_query_is_refused_before_the_body_is_read() {
        let receiver = WechatReceiver::new("wxapp", "tok123".into(), Vec::new());
        let now = chrono::Utc::now().timestamp().to_string();
        let mut query = signed_query("tok123", &now, "n3");
        query.insert("signature".into(), "0".repeat(40));
        assert!(receiver.admit(&query).is_err());
        query.remove("signature");
        assert!(receiver.admit(&query).is_err(), "no signature at all");
        query.insert("msg_signature".into(), "0".repeat(40));
        assert!(
            receiver.admit(&query).is_ok(),
            "msg_signature is checked with the body"
        );
        let far = query_with_stamp(i64::MIN);
        assert!(receiver.admit(&far).is_err(), "no overflow on a far stamp");
    }

    fn query_with_stamp(stamp: i64) -> BTreeMap<String, String> {
        signed_query("tok123", &stamp.to_string(), "n4")
    }

    #[test]
    fn push_tokens_follow_wechats_rule() {
        for good in ["abc", "Token123", &"a".repeat(32)] {
            assert!(token_is_valid(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "ab",
            "to ken",
            "tok-en",
            &"a".repeat(33),
            "令牌令牌",
        ] {
            assert!(!token_is_valid(bad), "{bad}");
        }
    }
}
