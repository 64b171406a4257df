//! A private document index (nanbeige-index) as a `Corpus`: search returns one result per
//! document (its best chunk), visit reads the whole document by id.
//!
//! Not here: building the index (`nanbeige index`), ranking (the index crate does BM25/hybrid).

use crate::tools::{Corpus, Page, SearchHit};
use anyhow::{anyhow, Result};
use nanbeige_index::Index;
use std::path::Path;

pub struct IndexCorpus {
    pub index: Index,
    name: String,
}

impl IndexCorpus {
    pub fn open(dir: &Path) -> Result<Self> {
        let index = Index::open(dir)?;
        let name = format!("a private document index ({} documents)", index.docs);
        Ok(Self { index, name })
    }
}

impl Corpus for IndexCorpus {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn search(&self, query: &str, k: usize) -> Result<Vec<SearchHit>> {
        // Several chunks of one document would waste the model's few results: keep the best.
        let mut out: Vec<SearchHit> = vec![];
        for h in self.index.search(query, k * 3)? {
            if out.iter().any(|o| o.id == h.doc_id) {
                continue;
            }
            let title = if h.heading.is_empty() || h.heading == h.title {
                h.title
            } else {
                format!("{} — {}", h.title, h.heading)
            };
            out.push(SearchHit { id: h.doc_id, title, snippet: h.snippet, source: h.source });
            if out.len() == k {
                break;
            }
        }
        Ok(out)
    }

    fn open(&self, id: &str) -> Result<Page> {
        let d = self
            .index
            .document(id)?
            .ok_or_else(|| anyhow!("no document with id '{id}' in the index; use an id from the search results"))?;
        Ok(Page { id: d.id, title: d.title, source: d.source, text: d.text })
    }
}
