//! Writing many rows: one `INSERT ... VALUES (...), (...)` per thousand rows, for every table a
//! batch or a run fills.

use sqlx::{Any, Transaction};

use super::sql::Query;
use crate::Result;

/// Rows per statement: at most 17 values each (a send), so at most 17,000 bound values, under
/// SQLite's limit of 32,766 and PostgreSQL's of 65,535. Full statements are the same SQL, so
/// sqlx prepares them once.
pub(super) const ROWS_PER_STATEMENT: usize = 1_000;

/// One row's values, pushed in column order (`row.push_bind(a).push_bind(b)`).
pub(super) type Row<'b> = super::sql::Row<'b>;

/// Runs `{head} VALUES (...), ... {tail}` over `rows`, `bind` pushing one row's values; returns
/// the rows the statements changed (an `ON CONFLICT DO NOTHING` tail makes that the new ones).
/// Bound values are cheaper for SQLite than a JSON list unpacked by `json_each`, which matters
/// for the rows of every batch.
pub(super) async fn insert<T>(
    tx: &mut Transaction<'_, Any>,
    (head, tail): (&str, &str),
    rows: &[T],
    mut bind: impl FnMut(Row<'_>, &T),
) -> Result<u64> {
    let mut changed = 0;
    let backend = super::sql::Backend::of_tx(tx);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = Query::new(backend, head);
        query.push(" ");
        query.push_values(chunk, &mut bind);
        query.push(" ");
        query.push(tail);
        // A last, shorter statement is not worth keeping prepared.
        changed += query
            .build()
            .persistent(chunk.len() == ROWS_PER_STATEMENT)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(changed)
}
