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

/// Chat text is trimmed, control characters (other than newline) removed.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect::<String>()
        .trim()
        .to_owned()
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
        assert_eq!(clean_text(" hi\u{0007}\u{202e}x \n"), "hi\u{202e}x");
    }
}
