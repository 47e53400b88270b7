//! Text that reaches a terminal: whatever another user or a request could
//! have put in it (descriptions, tags, names in audit records, reasons) is
//! shown with its control characters escaped, so it can neither move the
//! cursor, recolour the screen nor break a table's lines.

/// `s` with control characters, bidirectional overrides and backslashes
/// written as escapes: `\n`, `\t`, `\r`, `\\`, `\x1b`, `\u{202e}`.
/// Printable text, including non-ASCII letters, is left as it is.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || is_invisible_format(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder, hide or break the text around them: the line
/// and paragraph separators (U+2028, U+2029, which some terminals and most
/// editors take as line ends), bidirectional embeddings, overrides and
/// isolates, zero-width marks, the word joiner and invisible operators, the
/// soft hyphen and the Mongolian vowel separator.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// The width a column needs for `items`, at least `min` characters.
pub fn width<'a>(min: usize, items: impl IntoIterator<Item = &'a str>) -> usize {
    items
        .into_iter()
        .map(|s| s.chars().count())
        .fold(min, usize::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(escape("plain text"), "plain text");
        assert_eq!(escape("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("\u{7f}\u{85}"), "\\x7f\\u{85}");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape("café ünïcode"), "café ünïcode");
        assert_eq!(escape("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
        assert_eq!(escape("x\u{2060}y\u{ad}z"), "x\\u{2060}y\\u{ad}z");
        assert!(escape("\x00\x07\x1f").chars().all(|c| !c.is_control()));
    }

    #[test]
    fn widths_count_characters() {
        assert_eq!(width(4, ["ab", "abcdef"]), 6);
        assert_eq!(width(4, ["é"]), 4);
        assert_eq!(width(0, ["ééé"]), 3);
    }
}
