//! Text that people read. Process names, command lines, exe paths and file names belong to
//! whoever started the process or made the file: before any of them reaches a terminal, a
//! control character, an escape sequence, a newline or a bidirectional override is shown
//! escaped, so it cannot move the cursor, change colours, forge a row or reorder a line.
//! JSON output carries the exact bytes instead (serde escapes them).

use std::{borrow::Cow, fmt};

/// True for characters that must not reach a terminal as they are: C0 and C1 controls, DEL,
/// the backslash (escaped so that an escaped text is unambiguous), and Unicode's invisible
/// direction and formatting marks.
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `text` with every character a terminal would act on written as an escape (`\n`, `\t`,
/// `\x1b`, `\u{202e}`, `\\`); borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && needs_escape(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Displays a string escaped (see [`escape`]); width and alignment apply to the escaped text.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(escape("sleep"), "sleep");
        assert!(matches!(escape("sleep"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("\u{9b}2J"), "\\x9b2J");
        assert_eq!(escape("abc\u{202e}txt.exe"), "abc\\u{202e}txt.exe");
        assert_eq!(escape("x\u{7f}"), "x\\x7f");
        assert_eq!(escape("üñí"), "üñí");
    }

    #[test]
    fn padding_applies_to_the_escaped_text() {
        assert_eq!(format!("[{:<6}]", Escaped("a\tb")), "[a\\tb  ]");
    }
}
