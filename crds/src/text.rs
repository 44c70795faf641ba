//! Cutting text to a size without splitting a character: the one helper for messages that have
//! a limit (condition messages, event notes, the run result's fields, a log tail, quoted values).
//!
//! Pure. `str::floor_char_boundary` does this in std only from Rust 1.91, above the workspace's
//! `rust-version`.

/// What a cut message ends with.
pub const ELLIPSIS: &str = "...";

/// The largest character boundary of `s` at or below `index` (`s.len()` when `index` is beyond).
pub fn floor_char_boundary(s: &str, index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    let mut cut = index;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// Cuts `s` to at most `max` bytes, on a character boundary, ending it with [`ELLIPSIS`] when it
/// was cut. A string that fits is left as it is.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    s.truncate(floor_char_boundary(s, max.saturating_sub(ELLIPSIS.len())));
    s.push_str(ELLIPSIS);
}

/// At most `max_chars` characters of `s`, ending with [`ELLIPSIS`] when it was cut (for quoting
/// a value a person reads, where a count of characters is what matters).
pub fn shorten_chars(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}{ELLIPSIS}", &s[..end]),
        None => s.to_owned(),
    }
}

/// The end of `s`: its last `max` bytes at the most, starting on a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    let start = s.len().saturating_sub(max);
    let start = s
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= start)
        .unwrap_or(s.len());
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_on_a_character_boundary() {
        let mut short = "abc".to_owned();
        truncate(&mut short, 3);
        assert_eq!(short, "abc", "a string that fits stays");

        let mut ascii = "abcdefghij".to_owned();
        truncate(&mut ascii, 8);
        assert_eq!(ascii, "abcde...");

        // "é" is two bytes: a cut inside one moves back before it.
        let mut accents = "é".repeat(10);
        truncate(&mut accents, 8);
        assert_eq!(accents, "éé...");
        assert!(accents.len() <= 8);

        let mut tiny = "abcdef".to_owned();
        truncate(&mut tiny, 2);
        assert_eq!(tiny, "...", "no room: only the ellipsis");
    }

    #[test]
    fn shorten_chars_counts_characters() {
        assert_eq!(shorten_chars("abc", 3), "abc");
        assert_eq!(shorten_chars("abcd", 3), "abc...");
        assert_eq!(shorten_chars("éééé", 2), "éé...");
    }

    #[test]
    fn tail_starts_on_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(
            tail("aéé", 3),
            "é",
            "a start inside a character moves forward"
        );
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn floor_char_boundary_moves_back() {
        assert_eq!(floor_char_boundary("aé", 2), 1);
        assert_eq!(floor_char_boundary("aé", 3), 3);
        assert_eq!(floor_char_boundary("aé", 9), 3);
    }
}
