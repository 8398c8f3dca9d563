//! The console's two languages: every string a page shows comes from `i18n/en.toml` or
//! `i18n/zh-CN.toml` (embedded in the binary), picked from the viewer's choice (a cookie) or
//! `Accept-Language`.

use std::collections::HashMap;
use std::sync::LazyLock;

/// A language the console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// The code in cookies, links and `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The other language (the switch in the header).
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }

    /// A code from a cookie or a link: `en`, `zh`, `zh-CN` (any case).
    pub fn parse(code: &str) -> Option<Lang> {
        let code = code.trim().to_ascii_lowercase();
        if code == "en" || code.starts_with("en-") {
            Some(Lang::En)
        } else if code == "zh" || code.starts_with("zh-") {
            Some(Lang::Zh)
        } else {
            None
        }
    }

    /// The first language of an `Accept-Language` header the console speaks (by weight, then
    /// order); English when none.
    pub fn negotiate(accept: Option<&str>) -> Lang {
        let Some(accept) = accept else {
            return Lang::En;
        };
        let mut offered: Vec<(f32, usize, Lang)> = accept
            .split(',')
            .enumerate()
            .filter_map(|(order, part)| {
                let mut pieces = part.split(';');
                let lang = Lang::parse(pieces.next()?)?;
                let weight = pieces
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (weight > 0.0).then_some((weight, order, lang))
            })
            .collect();
        offered.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        offered.first().map(|o| o.2).unwrap_or(Lang::En)
    }

    /// The string for `key`. A key missing from the catalogue shows as itself (the tests fail
    /// on any such key).
    pub fn t(self, key: &'static str) -> &'static str {
        catalogue(self).get(key).copied().unwrap_or(key)
    }

    /// [`Lang::t`] with `{name}` placeholders filled from `values`.
    pub fn f(self, key: &'static str, values: &[(&str, &str)]) -> String {
        let mut text = self.t(key).to_string();
        for (name, value) in values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }
}

const EN: &str = include_str!("i18n/en.toml");
const ZH: &str = include_str!("i18n/zh-CN.toml");

fn catalogue(lang: Lang) -> &'static HashMap<String, &'static str> {
    static CATALOGUES: LazyLock<[HashMap<String, &'static str>; 2]> =
        LazyLock::new(|| [parse(EN), parse(ZH)]);
    &CATALOGUES[match lang {
        Lang::En => 0,
        Lang::Zh => 1,
    }]
}

/// A catalogue's strings, leaked once for the process's life (a few kilobytes).
fn parse(text: &str) -> HashMap<String, &'static str> {
    let table: toml::Table = text.parse().expect("the embedded catalogue is valid TOML");
    table
        .into_iter()
        .map(|(key, value)| {
            let text = value
                .as_str()
                .expect("every catalogue value is a string")
                .to_string();
            (key, &*Box::leak(text.into_boxed_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn keys(text: &str) -> BTreeSet<String> {
        parse(text).into_keys().collect()
    }

    #[test]
    fn both_catalogues_hold_the_same_keys() {
        let (en, zh) = (keys(EN), keys(ZH));
        let only_en: Vec<_> = en.difference(&zh).collect();
        let only_zh: Vec<_> = zh.difference(&en).collect();
        assert!(only_en.is_empty(), "missing in zh-CN.toml: {only_en:?}");
        assert!(only_zh.is_empty(), "missing in en.toml: {only_zh:?}");
    }

    /// Every string literal of the console's code shaped like a key (`group.name`) is a
    /// catalogue key (a mistyped key fails here), and every catalogue key is used somewhere.
    #[test]
    fn every_key_the_pages_ask_for_is_in_the_catalogue_and_none_is_unused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service/console");
        let is_key = |text: &str| {
            text.split_once('.').is_some_and(|(group, name)| {
                let word = |w: &str| {
                    !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                };
                // A file name (`cases.toml`) is not a key.
                word(group) && word(name) && !matches!(name, "toml" | "rhai" | "css" | "js" | "png")
            })
        };
        let mut used = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("i18n.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // The odd pieces between double quotes are the literals.
            for literal in text.split('"').skip(1).step_by(2) {
                if is_key(literal) {
                    used.insert(literal.to_string());
                }
            }
        }
        assert!(used.len() > 20, "the scan found too few keys: {used:?}");
        let known = keys(EN);
        let missing: Vec<_> = used.difference(&known).collect();
        assert!(
            missing.is_empty(),
            "keys missing from the catalogues: {missing:?}"
        );
        let unused: Vec<_> = known.difference(&used).collect();
        assert!(unused.is_empty(), "catalogue keys no page uses: {unused:?}");
    }

    #[test]
    fn the_viewers_languages_pick_by_weight_then_order() {
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::negotiate(Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("en-US,en;q=0.9,zh;q=0.8")), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr, zh-TW;q=0.5")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("en;q=0.2, zh;q=0.7")), Lang::Zh);
        assert_eq!(Lang::negotiate(Some("zh;q=0, de")), Lang::En);
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(
            Lang::En.f("user.unknown", &[("id", "u<1>")]),
            "No events and no sends for u<1> (ids are case-sensitive)."
        );
    }
}
