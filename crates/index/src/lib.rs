//! nanbeige-index: a private document index for the deep-search agent. Folders of txt, md and
//! html become overlapping chunks (chunk.rs) in a tantivy BM25 index (index.rs), optionally with
//! all-MiniLM-L6-v2 vectors computed in-process (embed.rs) for hybrid ranking. html.rs is also the
//! agent's HTML-to-text for fetched web pages.

pub mod chunk;
pub mod embed;
pub mod html;
pub mod index;

pub use index::{build, BuildOptions, BuildReport, Document, Hit, Index, Mode};
