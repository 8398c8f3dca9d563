//! The account's templates (`gettemplate`), with keywords parsed from `content`, so campaigns
//! can be checked against real keyword types.

use serde::{Deserialize, Serialize};

use super::client::WechatConnector;
use crate::SendError;

/// One subscription template of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// `priTmplId`.
    pub id: String,
    pub title: String,
    /// 2 = one-time, 3 = long-term.
    pub kind: i64,
    /// (label, keyword) in order, e.g. ("物品名称", "thing1").
    pub keywords: Vec<(String, String)>,
}

/// Parses `物品名称:{{thing1.DATA}}\n到期时间:{{time2.DATA}}` into (label, keyword) pairs.
pub fn parse_content(content: &str) -> Vec<(String, String)> {
    let mut keywords = Vec::new();
    for line in content.lines() {
        let Some(open) = line.find("{{") else {
            continue;
        };
        let Some(close) = line[open..].find(".DATA}}") else {
            continue;
        };
        let keyword = line[open + 2..open + close].trim().to_string();
        let label = line[..open]
            .trim()
            .trim_end_matches([':', '：'])
            .trim()
            .to_string();
        keywords.push((label, keyword));
    }
    keywords
}

#[derive(Deserialize)]
struct Listing {
    errcode: Option<i64>,
    errmsg: Option<String>,
    #[serde(default)]
    data: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "priTmplId")]
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(rename = "type", default)]
    kind: i64,
}

impl WechatConnector {
    /// Fetches the account's templates. WeChat rate-limits this call: cache the result.
    pub async fn templates(&self) -> Result<Vec<Template>, SendError> {
        let token = self.token().await?;
        let listing: Listing = self
            .http()
            .get(format!("{}/wxaapi/newtmpl/gettemplate", self.api_base()))
            .query(&[("access_token", token.as_str())])
            .send()
            .await
            .map_err(|_| SendError::Transient("gettemplate request failed".into()))?
            .json()
            .await
            .map_err(|_| SendError::Transient("gettemplate answer was unreadable".into()))?;
        match listing.errcode.unwrap_or(0) {
            0 => Ok(listing
                .data
                .into_iter()
                .map(|entry| Template {
                    keywords: parse_content(&entry.content),
                    id: entry.id,
                    title: entry.title,
                    kind: entry.kind,
                })
                .collect()),
            code => Err(super::errcode::classify(
                code,
                &listing.errmsg.unwrap_or_default(),
                chrono::Utc::now(),
                chrono_tz::Asia::Shanghai,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_come_out_of_the_content_in_order() {
        let content = "物品名称:{{thing1.DATA}}\n到期时间：{{time2.DATA}}\n\n备注:{{ thing3.DATA}}";
        assert_eq!(
            parse_content(content),
            [
                ("物品名称".to_string(), "thing1".to_string()),
                ("到期时间".into(), "time2".into()),
                ("备注".into(), "thing3".into())
            ]
        );
    }
}
