//! Multi-row statements in power-of-two sizes.
//!
//! Inserting one row per statement costs a round trip to sqlx's connection
//! thread and a VDBE start per row; one statement with hundreds of `VALUES`
//! rows amortises both. Every distinct SQL text is a prepared statement in
//! sqlx's per-connection cache, so instead of one text per batch length we
//! split any number of rows into chunks of 256, 128, ..., 1 rows: nine texts
//! per table, whatever the traffic.

use std::sync::Arc;

use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteQueryResult};
use sqlx::{Arguments, AssertSqlSafe, Executor};

/// log2 of the largest chunk.
const MAX_CHUNK_LOG2: usize = 8;
/// The largest chunk, in rows. 256 rows × 8 columns = 2048 bind parameters,
/// far below SQLite's limit of 32766.
pub(crate) const MAX_CHUNK: usize = 1 << MAX_CHUNK_LOG2;

/// The texts of one multi-row statement for 1, 2, 4, ..., 256 rows.
pub(crate) struct ChunkedSql {
    texts: Vec<Arc<str>>,
    columns: usize,
}

impl ChunkedSql {
    /// `head` is everything before the rows (ending in `VALUES `), `tail`
    /// everything after them; each row is `columns` placeholders.
    pub(crate) fn new(head: &str, columns: usize, tail: &str) -> ChunkedSql {
        debug_assert!(columns * MAX_CHUNK <= 32766);
        let row = format!("({})", vec!["?"; columns].join(","));
        let texts = (0..=MAX_CHUNK_LOG2)
            .map(|k| {
                let rows = vec![row.as_str(); 1 << k].join(",");
                Arc::from(format!("{head}{rows}{tail}"))
            })
            .collect();
        ChunkedSql { texts, columns }
    }

    fn text(&self, rows: usize) -> Arc<str> {
        debug_assert!(rows.is_power_of_two() && rows <= MAX_CHUNK);
        self.texts[rows.trailing_zeros() as usize].clone()
    }

    /// Runs the statement over all `rows`, `bind` adding one row's
    /// parameters. Returns the summed changes and the last statement's
    /// `last_insert_rowid` (the rowid of the last row inserted).
    pub(crate) async fn execute<T>(
        &self,
        conn: &mut SqliteConnection,
        rows: &[T],
        mut bind: impl FnMut(&mut SqliteArguments, &T) -> Result<(), sqlx::error::BoxDynError>,
    ) -> Result<SqliteQueryResult, sqlx::Error> {
        let mut total = SqliteQueryResult::default();
        let mut rest = rows;
        for size in chunk_sizes(rows.len()) {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut args = SqliteArguments::default();
            args.reserve(size * self.columns, 0);
            for row in chunk {
                bind(&mut args, row).map_err(sqlx::Error::Encode)?;
            }
            let result = conn
                .execute(sqlx::query_with(AssertSqlSafe(self.text(size)), args))
                .await?;
            total.extend([result]);
        }
        Ok(total)
    }
}

/// Splits `total` rows into full chunks of [`MAX_CHUNK`] and then the powers
/// of two of the remainder, biggest first.
pub(crate) fn chunk_sizes(total: usize) -> impl Iterator<Item = usize> {
    let rem = total % MAX_CHUNK;
    std::iter::repeat_n(MAX_CHUNK, total / MAX_CHUNK).chain(
        (0..MAX_CHUNK_LOG2)
            .rev()
            .map(|k| 1usize << k)
            .filter(move |size| rem & size != 0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_cover_every_row_with_powers_of_two() {
        for total in [0, 1, 2, 3, 255, 256, 257, 1000, 4096, 4097] {
            let sizes: Vec<usize> = chunk_sizes(total).collect();
            assert_eq!(sizes.iter().sum::<usize>(), total, "{total}: {sizes:?}");
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= MAX_CHUNK));
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "biggest first");
        }
        assert_eq!(
            chunk_sizes(1000).collect::<Vec<_>>(),
            [256, 256, 256, 128, 64, 32, 8]
        );
    }

    #[test]
    fn texts_have_the_right_number_of_rows() {
        let sql = ChunkedSql::new("INSERT INTO t (a, b) VALUES ", 2, " ON CONFLICT DO NOTHING");
        assert_eq!(
            &*sql.text(1),
            "INSERT INTO t (a, b) VALUES (?,?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(sql.text(4).matches("(?,?)").count(), 4);
        assert_eq!(sql.text(256).matches('?').count(), 512);
    }
}
