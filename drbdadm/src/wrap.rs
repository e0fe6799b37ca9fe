//! drbd-utils' `wrap_printf()` (user/shared/wrap_printf.c): how `drbdsetup status` breaks its
//! lines. Each piece of text goes on the current line if it fits in the terminal's width,
//! else on a new line indented by the piece's indent (its leading spaces dropped).

/// An output buffer that wraps like `wrap_printf`.
#[derive(Debug)]
pub struct Wrap {
    out: String,
    columns: i64,
    col: i64,
}

impl Wrap {
    /// Wraps at `columns` (drbdsetup: the terminal's width, 80 when stdout is not one).
    pub fn new(columns: usize) -> Wrap {
        Wrap {
            out: String::new(),
            columns: i64::try_from(columns).unwrap_or(80),
            col: 0,
        }
    }

    /// Wraps at the width of the terminal on stdout, or 80 columns.
    pub fn for_stdout() -> Wrap {
        Wrap::new(terminal_columns().unwrap_or(80))
    }

    /// Prints `text` (which may start with newlines and with spaces) at `indent`.
    pub fn print(&mut self, indent: usize, text: &str) {
        let mut text = text;
        while let Some(rest) = text.strip_prefix('\n') {
            self.out.push('\n');
            self.col = 0;
            text = rest;
        }
        // Nothing left: no indentation either, it would skew the next piece.
        if text.is_empty() {
            return;
        }
        let n = text.len() as i64;
        if self.col > 0 && self.col + n > self.columns {
            self.out.push('\n');
            self.col = 0;
        }
        if self.col == 0 {
            text = text.trim_start_matches(' ');
            self.out.extend(std::iter::repeat_n(' ', indent));
            // wrap_printf sets `col = indent` after `while (indent--)`, which leaves it at -1;
            // kept, so that lines break where drbdsetup breaks them.
            self.col = -1;
        }
        self.out.push_str(text);
        self.col += text.len() as i64;
        if text.ends_with('\n') {
            self.col = 0;
        }
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

/// The width of the terminal on stdout (TIOCGWINSZ), None when stdout is not a terminal.
fn terminal_columns() -> Option<usize> {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct we own and pass by pointer.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_that_do_not_fit_start_a_new_indented_line() {
        let mut w = Wrap::new(20);
        w.print(0, "res0");
        w.print(4, " role:Secondary");
        w.print(4, " suspended:no");
        w.print(0, "\n");
        // After "res0 role:Secondary" the count is 18; the next piece (13) would pass 20.
        assert_eq!(w.into_string(), "res0 role:Secondary\n    suspended:no\n");
    }

    #[test]
    fn the_column_count_starts_one_short_after_an_indent_as_in_drbd_utils() {
        // After the indent of a new line `col` is -1, the indent not counted: "abcdefgh"
        // makes it 7, and " ij" (3) makes 10, which still "fits" in 10 columns.
        let mut w = Wrap::new(10);
        w.print(2, "abcdefgh");
        w.print(2, " ij");
        assert_eq!(w.into_string(), "  abcdefgh ij");
    }
}
