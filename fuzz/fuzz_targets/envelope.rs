//! The AES envelope of a safe-mode push: any `Encrypt` text is opened or refused, never a
//! panic (lengths inside the plaintext are an attacker's to choose).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_connectors::wechat::crypto::{self, AesKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
    let _ = crypto::decrypt(&key, text, "wx0123456789abcdef");
});
