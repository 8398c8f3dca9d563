//! What a rule needs, read off its source when it is compiled, so the engine computes only
//! those facts; and which `user.` methods it calls that do not exist.

use std::collections::BTreeSet;

/// Methods a script may call on `user`.
pub const USER_METHODS: [&str; 11] = [
    "attr",
    "count",
    "last_seen",
    "days_since",
    "last",
    "credits",
    "sent",
    "clicked",
    "best_hour",
    "id",
    "tz",
];

/// Methods whose first argument is an event name.
const EVENT_METHODS: [&str; 4] = ["count", "last_seen", "days_since", "last"];

/// The facts a rule reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FactNeeds {
    /// Event names given as literals to `count`, `last_seen`, `days_since`, `last`.
    pub events: BTreeSet<String>,
    /// An event name is computed at run time: every event's history is needed.
    pub all_events: bool,
    /// Longest window of `count` in days (a literal, or a `const` set to one); `None` when some
    /// `count` has another window or none. `last_seen`, `days_since` and `last` are served by the
    /// latest occurrence, which is always computed over all history, so they leave it alone.
    pub max_days: Option<i64>,
    pub attrs: bool,
    pub credits: bool,
    /// Templates given to `credits` as a literal (or a `const` set to one).
    pub templates: BTreeSet<String>,
    /// Some `credits` call names its template otherwise: every template's credits are needed.
    pub all_templates: bool,
    pub sends: bool,
    pub best_hour: bool,
    /// `user.<name>` calls that are not user methods, with their line.
    pub unknown_methods: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Text(String),
    Number(i64),
    Punct(char),
}

/// Splits Rhai source into the tokens the analysis needs, skipping comments.
fn tokens(source: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let (mut at, mut line) = (0, 1);
    while at < chars.len() {
        let c = chars[at];
        if c == '\n' {
            line += 1;
            at += 1;
        } else if c.is_whitespace() {
            at += 1;
        } else if c == '/' && chars.get(at + 1) == Some(&'/') {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
        } else if c == '/' && chars.get(at + 1) == Some(&'*') {
            at += 2;
            while at < chars.len() && !(chars[at] == '*' && chars.get(at + 1) == Some(&'/')) {
                line += usize::from(chars[at] == '\n');
                at += 1;
            }
            at += 2;
        } else if c == '"' || c == '`' {
            let start_line = line;
            let mut text = String::new();
            at += 1;
            while at < chars.len() && chars[at] != c {
                if chars[at] == '\\' && at + 1 < chars.len() {
                    at += 1;
                }
                line += usize::from(chars[at] == '\n');
                text.push(chars[at]);
                at += 1;
            }
            at += 1;
            out.push((Token::Text(text), start_line));
        } else if c.is_ascii_digit() {
            let start = at;
            while at < chars.len()
                && (chars[at].is_ascii_alphanumeric() || chars[at] == '_' || chars[at] == '.')
            {
                at += 1;
            }
            let digits: String = chars[start..at].iter().filter(|c| **c != '_').collect();
            match digits.parse() {
                Ok(number) => out.push((Token::Number(number), line)),
                Err(_) => out.push((Token::Punct('#'), line)),
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = at;
            while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                at += 1;
            }
            out.push((Token::Ident(chars[start..at].iter().collect()), line));
        } else {
            out.push((Token::Punct(c), line));
            at += 1;
        }
    }
    out
}

/// Reads a rule's needs off its source.
pub fn analyse(source: &str) -> FactNeeds {
    let tokens = tokens(source);
    let mut needs = FactNeeds {
        max_days: Some(0),
        ..FactNeeds::default()
    };
    let ident = |at: usize| match tokens.get(at) {
        Some((Token::Ident(name), _)) => Some(name.as_str()),
        _ => None,
    };
    let punct =
        |at: usize, c: char| matches!(tokens.get(at), Some((Token::Punct(p), _)) if *p == c);
    // `const NAME = 3;`: windows written with a named constant are still known, unless the name
    // is declared more than once (a `let`, a parameter, another `const`) and could mean another
    // value where it is used.
    let mut declared: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut in_parameters = false;
    for at in 0..tokens.len() {
        if ident(at) == Some("fn") {
            in_parameters = punct(at + 2, '(');
        } else if in_parameters && punct(at, ')') {
            in_parameters = false;
        }
        let declares = matches!(ident(at), Some("const" | "let"));
        let parameter = in_parameters && (punct(at + 1, ',') || punct(at + 1, ')'));
        if let (true, Some(name)) = (declares, ident(at + 1)) {
            *declared.entry(name).or_default() += 1;
        } else if let (true, Some(name)) = (parameter, ident(at)) {
            *declared.entry(name).or_default() += 1;
        }
    }
    let constant = |at: usize| match (ident(at), ident(at + 1), tokens.get(at + 3)) {
        (Some("const"), Some(name), Some((token, _)))
            if punct(at + 2, '=') && punct(at + 4, ';') && declared.get(name) == Some(&1) =>
        {
            Some((name, token))
        }
        _ => None,
    };
    let constants: std::collections::HashMap<&str, i64> = (0..tokens.len())
        .filter_map(|at| match constant(at) {
            Some((name, Token::Number(value))) => Some((name, *value)),
            _ => None,
        })
        .collect();
    let texts: std::collections::HashMap<&str, &str> = (0..tokens.len())
        .filter_map(|at| match constant(at) {
            Some((name, Token::Text(value))) => Some((name, value.as_str())),
            _ => None,
        })
        .collect();
    for at in 0..tokens.len() {
        let Some(name) = ident(at) else { continue };
        let is_method = at > 0 && punct(at - 1, '.');
        if name == "user"
            && punct(at + 1, '.')
            && let Some(method) = ident(at + 2)
            && !USER_METHODS.contains(&method)
        {
            needs
                .unknown_methods
                .push((method.to_string(), tokens[at + 2].1));
        }
        if !is_method || !punct(at + 1, '(') {
            continue;
        }
        match name {
            "attr" => needs.attrs = true,
            "credits" => {
                needs.credits = true;
                let template = match tokens.get(at + 2) {
                    Some((Token::Text(template), _)) => Some(template.as_str()),
                    Some((Token::Ident(constant), _)) => texts.get(constant.as_str()).copied(),
                    _ => None,
                };
                match template {
                    Some(template) if punct(at + 3, ')') => {
                        needs.templates.insert(template.to_string());
                    }
                    _ => needs.all_templates = true,
                }
            }
            "sent" | "clicked" => needs.sends = true,
            "best_hour" => needs.best_hour = true,
            _ if EVENT_METHODS.contains(&name) => {
                match tokens.get(at + 2) {
                    Some((Token::Text(event), _)) => {
                        needs.events.insert(event.clone());
                    }
                    _ => needs.all_events = true,
                }
                if name != "count" {
                    continue;
                }
                let window = match (tokens.get(at + 3), tokens.get(at + 4)) {
                    (Some((Token::Punct(','), _)), Some((Token::Number(days), _)))
                        if punct(at + 5, ')') =>
                    {
                        Some(*days)
                    }
                    (Some((Token::Punct(','), _)), Some((Token::Ident(constant), _)))
                        if punct(at + 5, ')') =>
                    {
                        constants.get(constant.as_str()).copied()
                    }
                    _ => None,
                };
                needs.max_days = match (needs.max_days, window) {
                    (Some(longest), Some(days)) => Some(longest.max(days)),
                    _ => None,
                };
            }
            _ => {}
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_event_names_and_windows_are_found() {
        let needs = analyse(
            r#"
            // user.count("commented_out", 99) is not read
            fn target(user) {
                user.count("add_to_cart", 3) > 0 && user.count("purchase", 7) == 0
                    && user.credits("tmpl") > 0
            }"#,
        );
        assert_eq!(
            needs.events,
            BTreeSet::from(["add_to_cart".to_string(), "purchase".to_string()])
        );
        assert_eq!(needs.max_days, Some(7));
        assert!(needs.credits && !needs.attrs && !needs.all_events);
    }

    #[test]
    fn computed_names_need_every_event_and_non_literal_windows_unbound() {
        let needs = analyse(
            r#"fn target(user) { let e = "a"; user.days_since("app_open") > 14 || user.count(e, 3) > 0 }"#,
        );
        // `days_since` is served by the latest occurrence: only `count` bounds the window.
        assert_eq!(needs.max_days, Some(3));
        assert!(needs.all_events);
        let days = analyse(r#"fn target(user) { let d = 3; user.count("a", d) > 0 }"#);
        assert_eq!(days.max_days, None);
    }

    #[test]
    fn windows_named_by_constants_count_and_latest_only_reads_do_not_unbound() {
        let needs = analyse(
            r#"const WINDOW_DAYS = 3;
            const OTHER = 2 + 5;
            fn target(user) {
                user.count("add_to_cart", WINDOW_DAYS) > 0 && user.last_seen("purchase") == ()
                    && user.days_since("app_open") > 1 && user.last("add_to_cart") != ()
            }"#,
        );
        assert_eq!(needs.max_days, Some(3));
        let unknown =
            analyse(r#"const OTHER = 2 + 5; fn target(user) { user.count("a", OTHER) > 0 }"#);
        assert_eq!(unknown.max_days, None);
        let unbounded = analyse(r#"fn target(user) { user.count("a") > 0 }"#);
        assert_eq!(unbounded.max_days, None);
        let credits = analyse(
            r#"const T = "tmpl_a"; fn target(user) { user.credits(T) > 0 || user.credits("tmpl_b") > 0 }"#,
        );
        assert_eq!(
            credits.templates,
            BTreeSet::from(["tmpl_a".to_string(), "tmpl_b".to_string()])
        );
        assert!(credits.credits && !credits.all_templates);
        let computed = analyse(r#"fn target(user) { let t = "x"; user.credits(t) > 0 }"#);
        assert!(computed.all_templates);
        assert_eq!(unbounded.max_days, None);
        let shadowed =
            analyse(r#"const W = 3; fn target(user) { let W = 30; user.count("a", W) > 0 }"#);
        assert_eq!(shadowed.max_days, None);
        let parameter = analyse(
            r#"const W = 3; fn seen(user, W) { user.count("a", W) } fn target(user) { seen(user, 9) > 0 }"#,
        );
        assert_eq!(parameter.max_days, None);
    }

    #[test]
    fn unknown_user_methods_are_reported_with_their_line() {
        let needs = analyse("fn target(user) {\n  user.cuont(\"a\", 1) > 0\n}");
        assert_eq!(needs.unknown_methods, [("cuont".to_string(), 2)]);
    }
}
