//! Multi-row statements in a few fixed sizes: a batch goes in a handful of
//! statements instead of one per row (per-statement work was a large part
//! of the writer's time), and only these few shapes are prepared and cached.

use std::sync::OnceLock;

/// Rows per statement, largest first.
const SIZES: [usize; 4] = [64, 16, 4, 1];

/// `rows` in pieces of those sizes, largest first.
pub(crate) fn pieces<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = SIZES.into_iter().find(|&n| n <= rows.len())?;
        let (piece, rest) = rows.split_at(size);
        rows = rest;
        Some(piece)
    })
}

/// One statement for each size, written once by `build(rows)`.
pub(crate) struct ChunkedSql {
    build: fn(usize) -> String,
    written: OnceLock<Vec<String>>,
}

impl ChunkedSql {
    pub(crate) const fn new(build: fn(usize) -> String) -> Self {
        Self {
            build,
            written: OnceLock::new(),
        }
    }

    /// The statement for a piece of `rows` rows (one of the sizes).
    pub(crate) fn for_rows(&self, rows: usize) -> &str {
        let all = self
            .written
            .get_or_init(|| SIZES.iter().map(|&n| (self.build)(n)).collect());
        let index = SIZES.iter().position(|&n| n == rows).expect("a piece size");
        &all[index]
    }
}

/// `(?, ?, …)` repeated for `rows` rows of `columns` values.
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_largest_first_and_keep_every_row() {
        let rows: Vec<usize> = (0..91).collect();
        let sizes: Vec<usize> = pieces(&rows).map(<[usize]>::len).collect();
        assert_eq!(sizes, [64, 16, 4, 4, 1, 1, 1]);
        assert_eq!(pieces(&rows).flatten().copied().collect::<Vec<_>>(), rows);
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
