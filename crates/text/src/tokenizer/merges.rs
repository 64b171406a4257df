//! Recovers BPE merges from a SentencePiece vocabulary's scores, exactly as transformers'
//! `generate_merges(vocab, vocab_scores)` does for GGUF files without `tokenizer.ggml.merges`: every way
//! to cut a token into two known tokens is a merge, ranked by the token's score (higher first), then by
//! the longer left piece, then the longer right piece, ties kept in vocabulary order.
//! Lengths are in Unicode code points, as Python counts them.

use std::cmp::Ordering;
use std::collections::HashMap;

use anyhow::{bail, Result};

pub(crate) fn from_scores(tokens: &[&str], scores: &[f32]) -> Result<Vec<(String, String)>> {
    if tokens.len() != scores.len() {
        bail!(
            "GGUF vocabulary has {} tokens but {} scores",
            tokens.len(),
            scores.len()
        );
    }
    // Python dicts built from the token list: a repeated token keeps its first position and last value.
    let mut id: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut score: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, (&t, &s)) in tokens.iter().zip(scores).enumerate() {
        if id.insert(t, i).is_none() {
            order.push(t);
        }
        score.insert(t, s);
    }

    struct Merge<'a> {
        left: &'a str,
        right: &'a str,
        score: f32,
        left_len: usize,
        right_len: usize,
    }
    let mut merges: Vec<Merge> = Vec::new();
    for &token in &order {
        let s = score[token];
        let mut local: Vec<Merge> = token
            .char_indices()
            .skip(1)
            .map(|(cut, _)| (&token[..cut], &token[cut..]))
            .filter(|(l, r)| id.contains_key(l) && id.contains_key(r))
            .map(|(left, right)| Merge {
                left,
                right,
                score: s,
                left_len: left.chars().count(),
                right_len: right.chars().count(),
            })
            .collect();
        local.sort_by_key(|m| (id[m.left], id[m.right]));
        merges.extend(local);
    }
    // Stable sort, descending: equal keys stay in the order built above, as Python's sorted(reverse=True).
    merges.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then(b.left_len.cmp(&a.left_len))
            .then(b.right_len.cmp(&a.right_len))
    });
    Ok(merges
        .into_iter()
        .map(|m| (m.left.to_string(), m.right.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_order_as_transformers() {
        // Expected list from transformers' generate_merges on the same vocabulary (note the repeated
        // "b": its last score and id count, its first position).
        let tokens = [
            "<unk>", "▁", "a", "b", "ab", "▁a", "▁ab", "ba", "aba", "b", "ä", "äb", "▁ä",
        ];
        let scores = [
            0., -1., -2., -3., -4., -5., -6., -7., -8., -9., -10., -4., -5.,
        ];
        let got = super::from_scores(&tokens, &scores).unwrap();
        let want = [
            ("a", "b"),
            ("ä", "b"),
            ("▁", "a"),
            ("▁", "ä"),
            ("▁a", "b"),
            ("▁", "ab"),
            ("b", "a"),
            ("ab", "a"),
            ("a", "ba"),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
    }
}
