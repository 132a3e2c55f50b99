//! Tables for a person: rollouts, agents, backups, table sizes. One look
//! everywhere: upper-case header, no borders, two spaces between columns,
//! numbers right-aligned, never wrapped (a pipe to `grep` sees whole rows).

use comfy_table::{CellAlignment, ContentArrangement, presets};

/// A table being filled; [`Table::render`] gives the text.
#[derive(Debug)]
pub struct Table {
    inner: comfy_table::Table,
}

impl Table {
    /// A table with these column titles.
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        let mut inner = comfy_table::Table::new();
        inner
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header.map(str::to_uppercase));
        for column in inner.column_iter_mut() {
            column.set_padding((0, 2));
        }
        Self { inner }
    }

    /// Right-aligns the given columns (numbers, sizes).
    pub fn right(mut self, columns: &[usize]) -> Self {
        for &i in columns {
            if let Some(column) = self.inner.column_mut(i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        self
    }

    /// Adds a row; missing cells stay empty.
    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.inner.add_row(cells.into_iter().map(|c| c.to_string()).collect::<Vec<_>>());
        self
    }

    /// The text, without trailing spaces.
    pub fn render(&self) -> String {
        self.inner.trim_fmt()
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_borders() {
        let mut table = Table::new(["name", "bytes"]).right(&[1]);
        table.row(["a", "1 B"]).row(["longer", "10.0 KiB"]);
        assert_eq!(table.render(), "NAME       BYTES\na            1 B\nlonger  10.0 KiB");
    }
}
