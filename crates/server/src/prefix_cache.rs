//! Prefix cache: KV caches of finished requests, kept so that a request whose prompt extends an
//! earlier one (the next turn of a chat, the next step of an agent loop) prefills only what is new.
//!
//! A new request that shares most of a stored session (the next turn of that conversation) takes
//! it over, removing it from the store, so no two sequences ever write one cache. A request that
//! shares less than half of one (the same system prompt and tools, another conversation) gets a
//! copy of the shared positions and the stored session stays for its own next turn:
//! copying the KV of a prefix costs far less than computing it, and concurrent requests with one
//! system prompt all start warm. Sessions come back when their request ends. Memory is bounded
//! by a total token budget with least-recently-used eviction.

use nanbeige_engine::{LoadedModel, Session};

/// Below this many shared tokens a stored session is not worth taking over.
const MIN_SHARED: usize = 16;

pub struct PrefixCache {
    entries: Vec<(u64, Session)>,
    budget_tokens: usize,
    clock: u64,
    pub hits: u64,
}

impl PrefixCache {
    pub fn new(budget_tokens: usize) -> Self {
        Self { entries: vec![], budget_tokens, clock: 0, hits: 0 }
    }

    /// A session for `prompt`: the stored one with the longest shared prefix, or a fresh one.
    pub fn take(&mut self, prompt: &[u32], lm: &LoadedModel) -> Session {
        let shared = |s: &Session| s.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let best = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (i, shared(s)))
            .max_by_key(|&(_, n)| n);
        match best {
            Some((i, n)) if n >= MIN_SHARED => {
                self.hits += 1;
                // What the request will keep: at least one prompt token is always recomputed.
                let keep = n.min(prompt.len().saturating_sub(1));
                // Mostly shared (the next turn of that conversation): take it over. Shared only
                // in a minority part (a common system prompt): copy that part.
                if 2 * keep < self.entries[i].1.tokens.len() {
                    self.clock += 1;
                    self.entries[i].0 = self.clock;
                    if let Ok(s) = self.entries[i].1.copy_prefix(lm, keep) {
                        return s;
                    }
                }
                self.entries.swap_remove(i).1
            }
            _ => Session::new(lm),
        }
    }

    /// Return a session after its request finished.
    pub fn put(&mut self, session: Session) {
        if self.budget_tokens == 0 || session.tokens.len() < MIN_SHARED {
            return;
        }
        self.clock += 1;
        self.entries.push((self.clock, session));
        let mut total: usize = self.entries.iter().map(|(_, s)| s.tokens.len()).sum();
        while total > self.budget_tokens && !self.entries.is_empty() {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, (t, _))| *t).map(|(i, _)| i).unwrap();
            total -= self.entries.swap_remove(oldest).1.tokens.len();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn tokens(&self) -> usize {
        self.entries.iter().map(|(_, s)| s.tokens.len()).sum()
    }
}
