//! The template registry: what a connector says each template's keywords are, synced by
//! `nudge templates sync` and checked against at plan time.

use sqlx::Row;

use super::Store;
use crate::{Error, Result};

/// A message template as synced from a connector: the registry campaigns are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRow {
    pub id: String,
    pub title: String,
    /// 2 one-time, 3 long-term (WeChat's `type`).
    pub kind: i64,
    /// (label, keyword) in order, e.g. ("物品名称", "thing1").
    pub keywords: Vec<(String, String)>,
}

impl Store {
    /// Replaces the template registry with `templates`.
    pub async fn save_templates(&self, templates: &[TemplateRow], now_ms: i64) -> Result<()> {
        let mut tx = super::sql::begin_write(&self.pool).await?;
        sqlx::query("DELETE FROM templates")
            .execute(&mut *tx)
            .await?;
        for template in templates {
            let keywords =
                serde_json::to_string(&template.keywords).expect("pairs of strings serialise");
            sqlx::query("INSERT INTO templates (template_id, title, kind, keywords, synced_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(&template.id)
                .bind(&template.title)
                .bind(template.kind)
                .bind(keywords)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The template registry, by id.
    pub async fn templates(&self) -> Result<Vec<TemplateRow>> {
        let rows = sqlx::query(
            "SELECT template_id, title, kind, keywords FROM templates ORDER BY template_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.try_get("template_id")?;
                let keywords: String = row.try_get("keywords")?;
                let keywords = serde_json::from_str(&keywords).map_err(|error| {
                    Error::Database(format!(
                        "template {id}: stored keywords unreadable: {error}"
                    ))
                })?;
                Ok(TemplateRow {
                    id,
                    title: row.try_get("title")?,
                    kind: row.try_get("kind")?,
                    keywords,
                })
            })
            .collect()
    }
}
