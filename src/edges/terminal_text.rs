//! Text from records and log exports made safe and measurable for a terminal table:
//! escapes for what would steer the terminal, display widths for alignment.
//!
//! Security: claims, user agents and tenant log fields are chosen by whoever ran the job
//! or called the tenant. Shown raw, control characters could move the cursor or recolour
//! the screen, and bidirectional controls could reorder what an analyst reads (`acme/
//! U+202E txt.exe`); both are shown as escapes (`printable_escapes_what_steers_a_terminal`).

use unicode_width::UnicodeWidthStr as _;

/// `text` with control characters and invisible formatting characters (bidirectional
/// controls, zero-width characters, line and paragraph separators) escaped, as `\n` or
/// `\u{202e}`.
pub fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else if is_invisible_format(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Formatting characters that change how the text around them reads without showing
/// themselves.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// The columns `text` takes in a terminal (a CJK character two, a combining mark none).
pub fn width(text: &str) -> usize {
    text.width()
}

/// `text` followed by spaces up to `columns` display columns.
pub fn padded(text: &str, columns: usize) -> String {
    let mut cell = text.to_owned();
    cell.extend(std::iter::repeat_n(
        ' ',
        columns.saturating_sub(width(text)),
    ));
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_steers_a_terminal() {
        assert_eq!(printable("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\nc");
        assert_eq!(printable("acme/\u{202e}txt.exe"), "acme/\\u{202e}txt.exe");
        assert_eq!(printable("x\u{200b}y\u{2066}z"), "x\\u{200b}y\\u{2066}z");
        assert_eq!(printable("acme/é-ü 日本"), "acme/é-ü 日本");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(width("日本"), 4);
        assert_eq!(padded("日本", 6), "日本  ");
        assert_eq!(padded("ab", 1), "ab");
    }
}
