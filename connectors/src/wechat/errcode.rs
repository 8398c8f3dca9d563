//! WeChat errcodes and what each means for a send: the table of the shared domain notes.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::SendError;

/// Codes that mean "the access token is invalid or expired": refresh, then retry once.
pub const TOKEN_INVALID: [i64; 3] = [40001, 40014, 42001];

/// The codes of the domain notes' table: each is its own metric label, any other is `other`
/// (so a provider sending new codes cannot grow the label set without bound).
pub const LISTED: [i64; 17] = [
    -1, 40001, 40003, 40013, 40014, 40037, 40125, 40164, 41030, 42001, 43101, 43107, 43108, 45009,
    45011, 45168, 47003,
];

/// The metric label of `errcode`.
pub fn label(errcode: i64) -> String {
    if LISTED.contains(&errcode) {
        errcode.to_string()
    } else {
        "other".into()
    }
}

/// Whether `errcode` asks for a token refresh.
pub fn is_token_error(errcode: i64) -> bool {
    TOKEN_INVALID.contains(&errcode)
}

/// Time until the next local midnight in `zone`: when WeChat's daily quota resets.
pub fn until_next_day(now: DateTime<Utc>, zone: Tz) -> Duration {
    let local = now.with_timezone(&zone);
    let tomorrow = local
        .date_naive()
        .succ_opt()
        .and_then(|day| day.and_hms_opt(0, 0, 0));
    let reset = tomorrow
        .and_then(|midnight| zone.from_local_datetime(&midnight).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now + chrono::Duration::hours(24));
    (reset - now).to_std().unwrap_or(Duration::from_secs(3_600))
}

/// Classifies a non-zero errcode (token errors are handled by the client before this).
pub fn classify(errcode: i64, errmsg: &str, now: DateTime<Utc>, zone: Tz) -> SendError {
    let reason = errmsg.to_string();
    match errcode {
        -1 => SendError::Transient(format!("system busy (-1): {reason}")),
        45011 => SendError::RateLimited {
            retry_after: Duration::from_secs(60),
            whole_app: true,
            reason,
        },
        45009 => SendError::RateLimited {
            retry_after: until_next_day(now, zone),
            whole_app: true,
            reason,
        },
        43108 => SendError::Transient(format!("concurrent send error (43108): {reason}")),
        43101 => SendError::Rejected {
            code: errcode,
            reason,
            credit_gone: true,
        },
        40003 | 47003 | 43107 | 45168 => SendError::Rejected {
            code: errcode,
            reason,
            credit_gone: false,
        },
        40037 => SendError::Misconfigured {
            code: errcode,
            reason: format!("template_id is invalid: {reason}"),
        },
        41030 => SendError::Misconfigured {
            code: errcode,
            reason: format!("page is not a page of the released mini-program: {reason}"),
        },
        40013 | 40125 | 40164 => SendError::Misconfigured {
            code: errcode,
            reason: format!("appid, secret or IP whitelist rejected: {reason}"),
        },
        40001 | 40014 | 42001 => SendError::Transient(format!(
            "access token rejected again after a refresh ({errcode})"
        )),
        _ => SendError::Rejected {
            code: errcode,
            reason: format!("unexpected errcode: {reason}"),
            credit_gone: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-01T15:30:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn metric_labels_are_the_listed_codes_or_other() {
        assert_eq!(label(45009), "45009");
        assert_eq!(label(-1), "-1");
        assert_eq!(label(99999), "other");
        assert_eq!(label(0), "other");
    }

    #[test]
    fn every_documented_code_has_its_action() {
        let zone = chrono_tz::Asia::Shanghai;
        let class = |code| classify(code, "msg", now(), zone);
        assert!(matches!(class(-1), SendError::Transient(_)));
        assert!(matches!(class(43108), SendError::Transient(_)));
        assert!(matches!(
            class(43101),
            SendError::Rejected {
                credit_gone: true,
                ..
            }
        ));
        for code in [40003, 47003, 43107, 45168] {
            assert!(
                matches!(
                    class(code),
                    SendError::Rejected {
                        credit_gone: false,
                        ..
                    }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            class(40037),
            SendError::Misconfigured { code: 40037, .. }
        ));
        assert!(matches!(
            class(41030),
            SendError::Misconfigured { code: 41030, .. }
        ));
        assert!(matches!(
            class(45011),
            SendError::RateLimited {
                whole_app: true,
                ..
            }
        ));
        assert!(TOKEN_INVALID.iter().all(|code| is_token_error(*code)));
    }

    #[test]
    fn the_daily_quota_pauses_until_local_midnight() {
        // 15:30 UTC is 23:30 in Shanghai: the quota resets in 30 minutes.
        match classify(
            45009,
            "reach max api daily quota limit",
            now(),
            chrono_tz::Asia::Shanghai,
        ) {
            SendError::RateLimited {
                retry_after,
                whole_app,
                ..
            } => {
                assert_eq!(retry_after, Duration::from_secs(30 * 60));
                assert!(whole_app);
            }
            other => panic!("{other:?}"),
        }
    }
}
