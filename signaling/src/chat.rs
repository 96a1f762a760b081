//! Chat filtering.

/// Masks configured words (case-insensitive, whole words) with `*`.
#[derive(Clone, Debug, Default)]
pub struct WordFilter {
    words: Vec<String>,
}

impl WordFilter {
    pub fn new(words: &[String]) -> Self {
        Self {
            words: words
                .iter()
                .map(|w| w.trim().to_lowercase())
                .filter(|w| !w.is_empty())
                .collect(),
        }
    }

    pub fn apply(&self, text: &str) -> String {
        if self.words.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            if !word.is_empty() {
                if self.words.contains(&word.to_lowercase()) {
                    out.extend(std::iter::repeat_n('*', word.chars().count()));
                } else {
                    out.push_str(word);
                }
                word.clear();
            }
        };
        for c in text.chars() {
            if c.is_alphanumeric() || c == '\'' {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
        flush(&mut word, &mut out);
        out
    }
}

/// Chat text is trimmed; control characters (other than newline), bidi
/// controls and invisible characters are removed. Bidi overrides (U+202E)
/// let a stranger show `moc.live` as `evil.com`, zero-width spaces let them
/// split a filtered word or hide part of a link; no ordinary text needs
/// either. ZWJ and ZWNJ are kept where a script or an emoji sequence may use
/// them (right after a non-ASCII character: an emoji, a Devanagari virama, a
/// Persian letter), stripped elsewhere (inside an ASCII word they only hide it
/// from the word filter).
pub fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<char> = None;
    for c in text.chars() {
        let keep = match c {
            '\n' => true,
            ZWJ | ZWNJ => prev.is_some_and(|p| !p.is_ascii() && !p.is_whitespace()),
            c => !c.is_control() && !is_bidi_control(c) && !is_invisible(c),
        };
        if keep {
            out.push(c);
            prev = Some(c);
        }
    }
    out.trim().to_owned()
}

const ZWJ: char = '\u{200D}';
const ZWNJ: char = '\u{200C}';

/// Unicode's bidirectional formatting characters (UAX #9, "explicit
/// formatting" and the implicit marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Format characters that render as nothing: zero-width space, word joiner
/// and the invisible operators, BOM, soft hyphen, Mongolian vowel separator,
/// the deprecated format characters, interlinear annotation marks.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_masks_whole_words_case_insensitively() {
        let f = WordFilter::new(&["darn".into()]);
        assert_eq!(
            f.apply("Darn it, darning is DARN fine"),
            "**** it, darning is **** fine"
        );
        assert_eq!(WordFilter::new(&[]).apply("darn"), "darn");
    }

    #[test]
    fn control_characters_are_removed() {
        assert_eq!(clean_text(" hi\u{0007}x \n"), "hix");
        assert_eq!(clean_text("a\nb"), "a\nb");
    }

    #[test]
    fn bidi_overrides_and_zero_width_characters_are_stripped() {
        assert_eq!(clean_text("see \u{202E}moc.live\u{202C} now"), "see moc.live now");
        assert_eq!(clean_text("ev\u{200B}il.com"), "evil.com");
        assert_eq!(
            clean_text("\u{2066}x\u{2069}\u{200F}\u{FEFF}\u{2060}\u{00AD}"),
            "x"
        );
        // A zero-width joiner between letters would split a filtered word.
        assert_eq!(clean_text("da\u{200D}rn"), "darn");
    }

    #[test]
    fn ordinary_emoji_and_scripts_are_kept() {
        for text in [
            "family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} ok",
            "\u{2764}\u{FE0F}\u{200D}\u{1F525}",
            "\u{1F44B}\u{1F3FD} hello",
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
            "\u{0915}\u{094D}\u{200D}\u{0937}",
            "שלום עולם",
            "こんにちは 世界",
            "Grüße, ça va?",
        ] {
            assert_eq!(clean_text(text), text);
        }
    }
}
