//! An agent's output as a terminal shows it: the raw bytes (colours, cursor movement, a
//! TUI's redraws) run through a terminal emulator, and the screen rendered as HTML. Every
//! character from the agent is escaped; nothing it prints becomes markup.

use std::fmt::Write;

/// The terminal an attempt's output is replayed into.
pub struct Terminal {
    parser: vt100::Parser,
}

pub const ROWS: u16 = 40;
pub const COLS: u16 = 140;

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            parser: vt100::Parser::new(ROWS, COLS, 0),
        }
    }
}

/// The 16 basic colours (xterm's defaults), then the 6×6×6 cube and the grey ramp.
fn indexed(i: u8) -> String {
    const BASIC: [&str; 16] = [
        "#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
        "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
    ];
    match i {
        0..=15 => BASIC[usize::from(i)].to_string(),
        16..=231 => {
            let n = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            format!(
                "#{:02x}{:02x}{:02x}",
                level(n / 36),
                level((n / 6) % 6),
                level(n % 6)
            )
        }
        _ => {
            let g = 8 + (i - 232) * 10;
            format!("#{g:02x}{g:02x}{g:02x}")
        }
    }
}

fn colour(c: vt100::Color) -> Option<String> {
    match c {
        vt100::Color::Default => None,
        vt100::Color::Idx(i) => Some(indexed(i)),
        vt100::Color::Rgb(r, g, b) => Some(format!("#{r:02x}{g:02x}{b:02x}")),
    }
}

#[derive(PartialEq, Default, Clone)]
struct Style {
    fg: Option<String>,
    bg: Option<String>,
    bold: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn of(cell: &vt100::Cell) -> Style {
        let (mut fg, mut bg) = (colour(cell.fgcolor()), colour(cell.bgcolor()));
        if cell.inverse() {
            std::mem::swap(&mut fg, &mut bg);
            fg = fg.or_else(|| Some("#0d1117".into()));
            bg = bg.or_else(|| Some("#c9d1d9".into()));
        }
        Style {
            fg,
            bg,
            bold: cell.bold(),
            italic: cell.italic(),
            underline: cell.underline(),
        }
    }

    fn css(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.fg {
            let _ = write!(s, "color:{c};");
        }
        if let Some(c) = &self.bg {
            let _ = write!(s, "background:{c};");
        }
        if self.bold {
            s.push_str("font-weight:bold;");
        }
        if self.italic {
            s.push_str("font-style:italic;");
        }
        if self.underline {
            s.push_str("text-decoration:underline;");
        }
        s
    }
}

fn escape(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

impl Terminal {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
    }

    /// The screen as text (for tests and plain views).
    pub fn text(&self) -> String {
        self.parser.screen().contents()
    }

    /// The screen as HTML spans: one line per row, trailing blank rows dropped.
    pub fn html(&self) -> String {
        let screen = self.parser.screen();
        let (rows, cols) = screen.size();
        let mut lines: Vec<String> = Vec::with_capacity(usize::from(rows));
        for r in 0..rows {
            let mut line = String::new();
            let mut run = String::new();
            let mut style = Style::default();
            for c in 0..cols {
                let Some(cell) = screen.cell(r, c) else {
                    continue;
                };
                if cell.is_wide_continuation() {
                    continue;
                }
                let st = Style::of(cell);
                if st != style {
                    flush(&mut line, &run, &style);
                    run.clear();
                    style = st;
                }
                if cell.has_contents() {
                    run.push_str(cell.contents());
                } else {
                    run.push(' ');
                }
            }
            // Trailing blanks in the default style carry nothing.
            if style == Style::default() {
                let kept = run.trim_end().len();
                run.truncate(kept);
            }
            flush(&mut line, &run, &style);
            lines.push(line);
        }
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines.join("\n")
    }
}

fn flush(line: &mut String, run: &str, style: &Style) {
    if run.is_empty() {
        return;
    }
    let css = style.css();
    if css.is_empty() {
        escape(line, run);
    } else {
        let _ = write!(line, "<span style=\"{css}\">");
        escape(line, run);
        line.push_str("</span>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_spans_and_escapes_disappear() {
        let mut t = Terminal::default();
        t.feed(b"plain \x1b[31mred\x1b[0m \x1b[1;38;2;1;2;3mrgb\x1b[0m\r\n");
        let h = t.html();
        assert!(
            h.starts_with("plain <span style=\"color:#cd3131;\">red</span> "),
            "{h}"
        );
        assert!(
            h.contains("<span style=\"color:#010203;font-weight:bold;\">rgb</span>"),
            "{h}"
        );
        assert!(!h.contains('\x1b'), "{h}");
    }

    #[test]
    fn cursor_movement_redraws_in_place() {
        let mut t = Terminal::default();
        // A spinner redrawn with carriage returns, then a clear-line and a status.
        t.feed(b"Working |\rWorking /\rWorking -\r\x1b[2KDone.\r\nnext line\r\n");
        assert_eq!(t.text().trim_end(), "Done.\nnext line");
        // Cursor up and overwrite (a TUI repainting its status line).
        t.feed(b"\x1b[2A\x1b[2KAll done.\r\n");
        assert!(t.text().starts_with("All done.\nnext line"), "{}", t.text());
    }

    #[test]
    fn agent_text_is_never_markup() {
        let mut t = Terminal::default();
        t.feed(b"<script>alert('x')</script> & \"q\"\r\n");
        let h = t.html();
        assert_eq!(
            h,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        let mut t = Terminal::default();
        t.feed(
            b"\x1b[99999999999999;99999999999Hx\x1b[?1049h\xff\xfe\x1b]0;title\x07\x1b[38;5;300m",
        );
        let _ = t.html();
        for b in 0u8..=255 {
            t.feed(&[b, b'\x1b', b'[', b]);
        }
        let _ = t.html();
    }
}
