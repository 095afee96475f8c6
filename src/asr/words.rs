//! Turning decoder tokens into words: a token that starts with a space (or follows
//! punctuation-free text at a segment start) opens a new word; bytes are joined before
//! UTF-8 decoding, since one character can span tokens.

use super::Word;

/// One text token with its time span in seconds and its probability.
#[derive(Debug, Clone)]
pub struct TimedToken {
    pub bytes: Vec<u8>,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// Groups tokens into words. Word probability is the mean of its tokens'.
pub fn group_words(tokens: &[TimedToken]) -> Vec<Word> {
    let mut words = Vec::new();
    let mut current: Option<(Vec<u8>, f64, f64, f32, usize)> = None;
    for token in tokens {
        let opens_word = token.bytes.first() == Some(&b' ') || current.is_none();
        if opens_word {
            if let Some(w) = current.take() {
                push_word(&mut words, w);
            }
            current = Some((
                token.bytes.clone(),
                token.start,
                token.end,
                token.probability,
                1,
            ));
        } else if let Some((bytes, _, end, p, n)) = current.as_mut() {
            bytes.extend_from_slice(&token.bytes);
            *end = token.end.max(*end);
            *p += token.probability;
            *n += 1;
        }
    }
    if let Some(w) = current {
        push_word(&mut words, w);
    }
    words
}

fn push_word(words: &mut Vec<Word>, (bytes, start, end, p, n): (Vec<u8>, f64, f64, f32, usize)) {
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    if text.is_empty() {
        return;
    }
    words.push(Word {
        word: text,
        start,
        end: end.max(start),
        probability: p / n as f32,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &[u8], start: f64, end: f64, p: f32) -> TimedToken {
        TimedToken {
            bytes: text.to_vec(),
            start,
            end,
            probability: p,
        }
    }

    #[test]
    fn joins_sub_word_tokens_and_splits_on_spaces() {
        let words = group_words(&[
            token(b" Hel", 0.0, 0.2, 0.8),
            token(b"lo", 0.2, 0.4, 0.6),
            token(b" world", 0.5, 0.9, 0.9),
            token(b".", 0.9, 0.95, 1.0),
        ]);
        assert_eq!(words.len(), 2);
        assert_eq!(words[0].word, "Hello");
        assert_eq!((words[0].start, words[0].end), (0.0, 0.4));
        assert!((words[0].probability - 0.7).abs() < 1e-6);
        assert_eq!(words[1].word, "world.");
    }

    #[test]
    fn multibyte_characters_split_across_tokens_survive() {
        let e_acute = "é".as_bytes();
        let words = group_words(&[
            token(b" caf", 0.0, 0.1, 1.0),
            token(&e_acute[..1], 0.1, 0.2, 1.0),
            token(&e_acute[1..], 0.2, 0.3, 1.0),
        ]);
        assert_eq!(words[0].word, "café");
    }
}
