//! Generated inputs against WeChat's push readers: whatever a caller sends, the XML and JSON
//! readers, the AES envelope and the signature checks answer (never panic, never grow with an
//! attacker's nesting), and what WeChat would send reads back as it was written. The AES
//! envelope also round trips with an encryptor outside the crate: the `openssl` command.

use nudge_connectors::wechat::crypto::{self, AesKey};
use nudge_connectors::wechat::push::{self, PushKind};
use proptest::prelude::*;
use sha1::Digest;

/// Text WeChat fields may hold, XML's special characters and non-ASCII included.
fn field() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9_&<>\"'中文 -]{1,24}").unwrap()
}

fn escape(text: &str) -> String {
    // quick-xml's own escaper, not the reader's code.
    quick_xml::escape::escape(text).into_owned()
}

/// A popup event as WeChat writes it in XML: fields escaped (or, for one, in CDATA).
fn popup_xml(openid: &str, items: &[(String, bool)], cdata: bool) -> String {
    let open = if cdata {
        format!("<![CDATA[{openid}]]>")
    } else {
        escape(openid)
    };
    let list: String = items
        .iter()
        .map(|(template, accept)| {
            format!(
                "<List><TemplateId>{}</TemplateId><SubscribeStatusString>{}</SubscribeStatusString><PopupScene>0</PopupScene></List>",
                escape(template),
                if *accept { "accept" } else { "reject" }
            )
        })
        .collect();
    format!(
        "<xml><ToUserName>gh_1</ToUserName><FromUserName>{open}</FromUserName><CreateTime>1714037059</CreateTime><MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event>{list}</xml>"
    )
}

fn sha1_hex(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    sha1::Sha1::digest(parts.concat().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_is_read_or_refused_never_a_panic(body in "\\PC{0,400}") {
        let _ = push::parse(&body);
        let _ = push::encrypted_field(&body);
    }

    #[test]
    fn any_xml_shaped_text_is_read_or_refused(
        tags in proptest::collection::vec("[A-Za-z]{1,6}|List|Encrypt|/[A-Za-z]{1,6}|!\\[CDATA\\[x\\]\\]|&amp;|&#[0-9]{1,7};|&[a-z]{1,5};", 0..60),
    ) {
        let body: String = tags.iter().map(|tag| {
            if tag.starts_with('&') { tag.clone() } else { format!("<{tag}>") }
        }).collect();
        let _ = push::parse(&format!("<xml>{body}</xml>"));
        let _ = push::encrypted_field(&format!("<xml>{body}</xml>"));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_whatever_the_depth(depth in 9usize..5_000) {
        let body = format!("<xml>{}{}</xml>", "<a>".repeat(depth), "</a>".repeat(depth));
        prop_assert!(push::parse(&body).is_err());
        prop_assert!(push::encrypted_field(&body).is_err());
    }

    #[test]
    fn a_popup_written_as_wechat_writes_it_reads_back(
        openid in field(),
        items in proptest::collection::vec((field(), any::<bool>()), 1..5),
        cdata in any::<bool>(),
    ) {
        let event = push::parse(&popup_xml(&openid, &items, cdata)).unwrap();
        prop_assert_eq!(event.kind, PushKind::Popup);
        prop_assert_eq!(&event.openid, openid.trim());
        let read: Vec<(String, bool)> = event
            .items
            .iter()
            .map(|item| (item.template_id.clone(), item.status.as_deref() == Some("accept")))
            .collect();
        let written: Vec<(String, bool)> =
            items.iter().map(|(t, a)| (t.trim().to_string(), *a)).collect();
        prop_assert_eq!(read, written);

        // The same event as JSON, written by serde_json.
        let json = serde_json::json!({
            "FromUserName": openid, "CreateTime": 1714037059, "Event": "subscribe_msg_popup_event",
            "List": items.iter().map(|(t, a)| serde_json::json!({
                "TemplateId": t, "SubscribeStatusString": if *a { "accept" } else { "reject" }
            })).collect::<Vec<_>>(),
        });
        let event = push::parse(&json.to_string()).unwrap();
        prop_assert_eq!(&event.openid, &openid);
        prop_assert_eq!(event.items.len(), items.len());
    }

    #[test]
    fn the_envelope_round_trips_and_any_change_is_refused_or_read_as_garbage(
        message in "\\PC{0,300}",
        random in any::<[u8; 16]>(),
        flip in any::<usize>(),
    ) {
        let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        let sealed = crypto::encrypt(&key, &message, "wx0123456789abcdef", random);
        prop_assert_eq!(crypto::decrypt(&key, &sealed, "wx0123456789abcdef").unwrap(), message.clone());
        // Any one character changed: refused, or (CBC) a different message; never a panic.
        let mut bytes = sealed.into_bytes();
        let at = flip % bytes.len();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        if let Ok(opened) = crypto::decrypt(&key, &changed, "wx0123456789abcdef") {
            prop_assert_ne!(opened, message);
        }
    }

    #[test]
    fn any_envelope_text_is_opened_or_refused(text in "[A-Za-z0-9+/=]{0,400}") {
        let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        let _ = crypto::decrypt(&key, &text, "wx0123456789abcdef");
    }

    #[test]
    fn signatures_match_an_independent_sha1_and_nothing_else(
        token in "[A-Za-z0-9]{3,32}",
        timestamp in "[0-9]{1,12}",
        nonce in "[0-9a-z]{1,16}",
        encrypt in "[A-Za-z0-9+/=]{0,64}",
        given in "\\PC{0,60}",
    ) {
        let expected = sha1_hex(&mut [&token, &timestamp, &nonce]);
        prop_assert!(push::signature_is_valid(&token, &timestamp, &nonce, &expected));
        prop_assert!(push::signature_is_valid(&token, &timestamp, &nonce, &expected.to_uppercase()));
        prop_assert_eq!(
            push::signature_is_valid(&token, &timestamp, &nonce, &given),
            given.to_ascii_lowercase() == expected
        );
        prop_assert_eq!(
            crypto::msg_signature(&token, &timestamp, &nonce, &encrypt),
            sha1_hex(&mut [&token, &timestamp, &nonce, &encrypt])
        );
    }
}

const ENCODING_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx0123456789abcdef";

/// The AES key and IV WeChat derives from an EncodingAESKey, as hex for `openssl enc`:
/// the key is the 43 characters plus `=` read as base64, the IV its first 16 bytes.
fn openssl_key_iv() -> (String, String) {
    use base64::Engine;
    use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
    // The 43rd character may carry bits past the key's 256 (WeChat's keys are random text).
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = lenient.decode(format!("{ENCODING_AES_KEY}=")).unwrap();
    assert_eq!(key.len(), 32);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    (hex(&key), hex(&key[..16]))
}

/// `openssl enc -aes-256-cbc` with WeChat's key and no padding of its own, on `input`.
fn openssl(decrypt: bool, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let (key, iv) = openssl_key_iv();
    let mut command = std::process::Command::new("openssl");
    command.args([
        "enc",
        "-aes-256-cbc",
        "-nopad",
        "-a",
        "-A",
        "-K",
        &key,
        "-iv",
        &iv,
    ]);
    if decrypt {
        command.arg("-d");
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl command (Debian's openssl package) runs these tests");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "openssl enc failed");
    output.stdout
}

/// WeChat's plaintext layout, written here from its documentation: 16 random bytes, the
/// message's length (4 bytes, big-endian), the message, the appid, then PKCS#7 padding to a
/// multiple of 32 bytes (1 to 32 bytes, each holding the count).
fn wechat_plaintext(random: [u8; 16], message: &str) -> Vec<u8> {
    let mut plain = random.to_vec();
    plain.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(APPID.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(u8::try_from(pad).unwrap(), pad));
    plain
}

proptest! {
    // Each case runs openssl twice.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_envelope_opens_what_openssl_seals_and_openssl_opens_what_it_seals(
        message in "\\PC{0,200}",
        random in any::<[u8; 16]>(),
    ) {
        let key = AesKey::parse(ENCODING_AES_KEY).unwrap();
        // openssl seals, the crate opens.
        let sealed = String::from_utf8(openssl(false, &wechat_plaintext(random, &message))).unwrap();
        prop_assert_eq!(crypto::decrypt(&key, &sealed, APPID).unwrap(), message.clone());
        // The crate seals, openssl opens: byte for byte WeChat's layout.
        let ours = crypto::encrypt(&key, &message, APPID, random);
        let opened = openssl(true, ours.as_bytes());
        prop_assert_eq!(opened, wechat_plaintext(random, &message));
    }
}
