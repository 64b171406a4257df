//! `nanbeige index PATH… --out IDX [--embed]` builds or updates a private document index (txt,
//! md, html) and `nanbeige search IDX "query"` queries it. The work is in nanbeige-index; this file
//! only parses flags, resolves the embedding model and prints.

use anyhow::Result;
use clap::Args;
use nanbeige_engine::hub;
use nanbeige_index::chunk::ChunkOptions;
use nanbeige_index::{BuildOptions, Index, Mode};
use std::path::PathBuf;

#[derive(Args)]
pub struct IndexArgs {
    /// Files or folders to index (txt, md, html; other files are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Index directory (created, or updated in place: only changed files are read again).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Also store all-MiniLM-L6-v2 vectors for hybrid search (fetches the model on first use).
    #[arg(long)]
    pub embed: bool,
    /// Embedding model directory (default: the cached `minilm`).
    #[arg(long)]
    pub embed_model: Option<PathBuf>,
    /// Most words per chunk.
    #[arg(long, default_value_t = 200)]
    pub chunk_words: usize,
    /// Words repeated from the previous chunk.
    #[arg(long, default_value_t = 40)]
    pub overlap_words: usize,
    /// Leave out files whose path (relative to the indexed folder) matches this glob
    /// (`*` any characters, `?` one); repeatable. E.g. --exclude '_sources/*' --exclude 'genindex*'.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Print the build report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Index directory made by `nanbeige index`.
    pub index: PathBuf,
    pub query: String,
    /// Number of results.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub k: usize,
    /// auto (hybrid when the index has vectors), bm25, hybrid or dense.
    #[arg(long, default_value = "auto")]
    pub mode: String,
    #[arg(long)]
    pub json: bool,
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

pub fn index(a: IndexArgs) -> Result<()> {
    let embed_model = match (&a.embed_model, a.embed) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => {
            let k = hub::find_known("minilm").expect("minilm is a known model");
            Some(hub::ensure_known(k)?)
        }
        (None, false) => None,
    };
    let opts = BuildOptions {
        chunk: ChunkOptions { max_words: a.chunk_words, overlap_words: a.overlap_words },
        embed_model,
        progress: !a.json,
        exclude: a.exclude.clone(),
        ..Default::default()
    };
    let r = nanbeige_index::build(&a.paths, &a.out, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    for e in &r.errors {
        eprintln!("warning: skipped {e}");
    }
    println!(
        "indexed {} files ({} added, {} updated, {} removed, {} unchanged, {} unreadable): {} chunks written{}",
        r.added.len() + r.updated.len(),
        r.added.len(),
        r.updated.len(),
        r.removed.len(),
        r.unchanged,
        r.errors.len(),
        r.chunks_indexed,
        if opts.embed_model.is_some() { format!(", {} embedded", r.chunks_embedded) } else { String::new() },
    );
    println!(
        "index {}: {} documents, {} chunks, {} on disk; took {:.1}s",
        a.out.display(),
        r.total_docs,
        r.total_chunks,
        human_bytes(r.bytes),
        r.seconds
    );
    Ok(())
}

pub fn search(a: SearchArgs) -> Result<()> {
    let mode: Mode = a.mode.parse()?;
    let idx = Index::open(&a.index)?;
    let hits = idx.search_mode(&a.query, a.k, mode)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no results");
    }
    for (i, h) in hits.iter().enumerate() {
        println!("{:>2}. {}  score {:.4}", i + 1, h.id, h.score);
        println!("    {}", h.source);
        if h.heading.is_empty() {
            println!("    {}", h.title);
        } else {
            println!("    {} | {}", h.title, h.heading);
        }
        println!("    {}", h.snippet);
    }
    Ok(())
}
