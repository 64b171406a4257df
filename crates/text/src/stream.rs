//! `StreamDecoder`: turns generated token ids into text pieces as they arrive, never emitting half a
//! character. Each step decodes a short window of recent tokens and emits what the new token added
//! (the approach of Hugging Face's text-generation-inference), so decoders that depend on neighbours
//! (SentencePiece's leading-space strip, byte-fallback and byte-level tokens that together make one
//! character) give the same text as decoding everything at once.
//!
//! While the decoded window ends in U+FFFD the new bytes may be an unfinished character, so output is
//! held back; after `MAX_HELD` such tokens the text is released as it is (the model really produced
//! invalid UTF-8) so a broken stream cannot stall forever. It does not stop generation or filter text.

use anyhow::Result;

use crate::Tokenizer;

/// A UTF-8 character is at most 4 bytes, each byte at least one token; beyond that it cannot complete.
const MAX_HELD: usize = 8;

pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the context window: tokens before it are done with.
    prefix_offset: usize,
    /// Tokens before this have been emitted.
    read_offset: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        StreamDecoder {
            tok,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds one token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.emit(false)
    }

    /// Returns whatever is still held back (an unfinished character comes out as U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>> {
        self.emit(true)
    }

    fn emit(&mut self, force: bool) -> Result<Option<String>> {
        if self.read_offset >= self.ids.len() {
            return Ok(None);
        }
        let prefix = self.tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special_tokens,
        )?;
        let full = self
            .tok
            .decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        let held = self.ids.len() - self.read_offset;
        if !force && full.ends_with('\u{FFFD}') && held < MAX_HELD {
            return Ok(None);
        }
        let new = new_suffix(&prefix, &full);
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        // Keep the token list short: only the window is needed from here on.
        if self.prefix_offset > 0 {
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
        Ok(if new.is_empty() {
            None
        } else {
            Some(new.to_string())
        })
    }
}

/// What `full` adds to `prefix`. They normally share the prefix exactly; if an earlier forced release
/// left a U+FFFD that the new token turned into a real character, they differ, and the text after
/// their common part is returned.
fn new_suffix<'s>(prefix: &str, full: &'s str) -> &'s str {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest;
    }
    let common = prefix
        .char_indices()
        .zip(full.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(prefix.len().min(full.len()));
    let mut cut = common.min(full.len());
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    &full[cut..]
}

#[cfg(test)]
mod tests {
    use super::new_suffix;

    #[test]
    fn suffix() {
        assert_eq!(new_suffix("ab", "abc"), "c");
        assert_eq!(new_suffix("a\u{FFFD}", "a😀b"), "😀b");
        assert_eq!(new_suffix("", "x"), "x");
        assert_eq!(new_suffix("abc", "ab"), "");
    }
}
