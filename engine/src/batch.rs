//! Accepted events of one batch, column by column: what ingest hands to the store.
//!
//! Each column is one buffer, so a batch of half a million events costs a handful of
//! allocations instead of five per event, and the segment writer reads it column by column.

pub use crate::event::EventRef;
use crate::event::Valid;

/// A column of optional texts held in one buffer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Texts {
    data: String,
    /// Where each value ends in `data`; a missing value ends where the one before it does.
    ends: Vec<usize>,
    /// Which values are present; `None` while every value is.
    present: Option<Vec<bool>>,
}

impl Texts {
    #[inline]
    pub fn push(&mut self, value: Option<&str>) {
        match value {
            Some(value) => {
                self.data.push_str(value);
                if let Some(present) = &mut self.present {
                    present.push(true);
                }
            }
            None => self.mark_present().push(false),
        }
        self.ends.push(self.data.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The presence flags, made explicit for the rows so far.
    fn mark_present(&mut self) -> &mut Vec<bool> {
        let rows = self.ends.len();
        self.present.get_or_insert_with(|| vec![true; rows])
    }

    /// The value of `row`, if present.
    #[inline(always)]
    pub fn get(&self, row: usize) -> Option<&str> {
        if self.present.as_ref().is_some_and(|present| !present[row]) {
            return None;
        }
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        Some(&self.data[start..self.ends[row]])
    }

    /// The value of `row`, or "" when missing (for columns that are never missing).
    #[inline(always)]
    pub(crate) fn text(&self, row: usize) -> &str {
        self.get(row).unwrap_or_default()
    }

    /// Whether no value is missing.
    pub fn all_present(&self) -> bool {
        self.present.is_none()
    }

    fn append(&mut self, other: &Texts) {
        let base = self.data.len();
        match &other.present {
            Some(theirs) => self.mark_present().extend_from_slice(theirs),
            None => {
                if let Some(present) = &mut self.present {
                    present.extend(std::iter::repeat_n(true, other.len()));
                }
            }
        }
        self.data.push_str(&other.data);
        self.ends.extend(other.ends.iter().map(|end| base + end));
    }

    fn reserve(&mut self, rows: usize, bytes: usize) {
        self.ends.reserve(rows);
        self.data.reserve(bytes);
    }
}

/// Validated events, column by column, in the order they were read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventBatch {
    pub user_id: Texts,
    pub event: Texts,
    /// Epoch milliseconds, UTC.
    pub ts: Vec<i64>,
    /// The `props` JSON objects as text.
    pub props: Texts,
    pub event_id: Texts,
    /// Valid IANA zone names, where the record carried one.
    pub tz: Texts,
}

impl EventBatch {
    pub fn with_capacity(rows: usize) -> EventBatch {
        let mut batch = EventBatch::default();
        batch.user_id.reserve(rows, rows * 10);
        batch.event.reserve(rows, rows * 10);
        batch.ts.reserve(rows);
        batch.props.reserve(rows, rows * 48);
        batch.event_id.reserve(rows, rows * 12);
        batch.tz.reserve(rows, 0);
        batch
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn push(&mut self, event: &Valid<'_>) {
        self.push_ref(EventRef {
            user_id: &event.user_id,
            event: &event.event,
            ts_ms: event.ts_ms,
            props: event.props.as_deref(),
            event_id: event.event_id.as_deref(),
            tz: event.tz.as_deref(),
        });
    }

    #[inline]
    pub fn push_ref(&mut self, event: EventRef<'_>) {
        self.user_id.push(Some(event.user_id));
        self.event.push(Some(event.event));
        self.ts.push(event.ts_ms);
        self.props.push(event.props);
        self.event_id.push(event.event_id);
        self.tz.push(event.tz);
    }

    pub fn get(&self, row: usize) -> EventRef<'_> {
        EventRef {
            user_id: self.user_id.text(row),
            event: self.event.text(row),
            ts_ms: self.ts[row],
            props: self.props.get(row),
            event_id: self.event_id.get(row),
            tz: self.tz.get(row),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> {
        (0..self.len()).map(|row| self.get(row))
    }

    /// The events of `parts`, in order, in buffers sized once.
    pub fn concat<'a>(parts: impl Iterator<Item = &'a EventBatch> + Clone) -> EventBatch {
        let mut batch = EventBatch::default();
        let rows: usize = parts.clone().map(EventBatch::len).sum();
        let bytes = |column: fn(&EventBatch) -> &Texts| -> usize {
            parts.clone().map(|part| column(part).data.len()).sum()
        };
        batch.user_id.reserve(rows, bytes(|part| &part.user_id));
        batch.event.reserve(rows, bytes(|part| &part.event));
        batch.ts.reserve(rows);
        batch.props.reserve(rows, bytes(|part| &part.props));
        batch.event_id.reserve(rows, bytes(|part| &part.event_id));
        batch.tz.reserve(rows, bytes(|part| &part.tz));
        for part in parts {
            batch.append(part);
        }
        batch
    }

    /// Appends `other`'s events after these.
    pub fn append(&mut self, other: &EventBatch) {
        self.user_id.append(&other.user_id);
        self.event.append(&other.event);
        self.ts.extend_from_slice(&other.ts);
        self.props.append(&other.props);
        self.event_id.append(&other.event_id);
        self.tz.append(&other.tz);
    }

    /// The events whose `keep` flag is set, in order.
    pub fn filtered(&self, keep: &[bool]) -> EventBatch {
        let mut out = EventBatch::default();
        for (row, _) in keep.iter().enumerate().filter(|(_, keep)| **keep) {
            out.push_ref(self.get(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn valid(user: &str, ts_ms: i64, props: Option<&str>) -> Valid<'static> {
        Valid {
            user_id: Cow::Owned(user.to_string()),
            event: Cow::Borrowed("page_view"),
            ts_ms,
            props: props.map(|p| Cow::Owned(p.to_string())),
            event_id: None,
            tz: None,
        }
    }

    #[test]
    fn values_read_back_as_pushed_with_missing_ones_missing() {
        let mut batch = EventBatch::default();
        batch.push(&valid("u1", 1, Some("{}")));
        batch.push(&valid("", 2, None));
        batch.push(&valid("u3", 3, Some(r#"{"a":1}"#)));
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.get(0).props, Some("{}"));
        assert_eq!(batch.get(1).user_id, "");
        assert_eq!(batch.get(1).props, None);
        assert_eq!(batch.get(2).props, Some(r#"{"a":1}"#));
        assert_eq!(batch.get(2).event_id, None);
        assert!(!batch.props.all_present());
    }

    #[test]
    fn a_column_missing_everywhere_stays_missing_after_appends() {
        let mut part = EventBatch::default();
        part.push(&valid("a", 1, None));
        part.push(&valid("b", 2, None));
        let whole = EventBatch::concat([&part, &part].into_iter());
        assert_eq!(whole.len(), 4);
        assert!(
            whole
                .iter()
                .all(|event| event.props.is_none() && event.event_id.is_none())
        );
    }

    #[test]
    fn appending_and_filtering_keep_rows_whole() {
        let mut first = EventBatch::default();
        first.push(&valid("a", 1, None));
        let mut second = EventBatch::default();
        second.push(&valid("b", 2, Some("{}")));
        second.push(&valid("c", 3, None));
        first.append(&second);
        let users: Vec<_> = first
            .iter()
            .map(|e| (e.user_id, e.ts_ms, e.props))
            .collect();
        assert_eq!(
            users,
            [("a", 1, None), ("b", 2, Some("{}")), ("c", 3, None)]
        );
        let kept = first.filtered(&[true, false, true]);
        let users: Vec<_> = kept.iter().map(|e| (e.user_id, e.props)).collect();
        assert_eq!(users, [("a", None), ("c", None)]);
    }
}
