//! A growth team's script: any source compiles or is refused with a position, and one that
//! compiles is evaluated inside the sandbox's limits for a user, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nudge_rules::{Rule, UserFacts};

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rule) = Rule::compile("fuzz.rhai", source, Default::default()) else {
        return;
    };
    let user = UserFacts {
        id: "u1".into(),
        tz: "Asia/Shanghai".into(),
        ..UserFacts::default()
    };
    let _ = nudge_rules::evaluate_all(&rule, &[user.into()], 1_793_491_200_000);
});
