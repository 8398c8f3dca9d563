//! WeChat's push bodies (XML or JSON, plain or the safe-mode wrapper): any bytes are read or
//! refused, never a panic, an abort or unbounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_connectors::wechat::push;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let _ = push::parse(body);
    let _ = push::encrypted_field(body);
});
