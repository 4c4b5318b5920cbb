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

/// Characters that show nothing of themselves yet change or hide what is read: Unicode's
/// format characters (bidirectional controls, zero-width characters, tags), variation
/// selectors, and the fillers that render blank.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
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
        // Tag characters spell hidden text; a variation selector and a Hangul filler hide.
        assert_eq!(
            printable("a\u{e0041}\u{fe0f}\u{3164}b"),
            "a\\u{e0041}\\u{fe0f}\\u{3164}b"
        );
        assert_eq!(printable("acme/é-ü 日本"), "acme/é-ü 日本");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(width("日本"), 4);
        assert_eq!(padded("日本", 6), "日本  ");
        assert_eq!(padded("ab", 1), "ab");
    }
}
