//! The index on disk and its queries. A directory holds:
//! - `tantivy/`: one record per chunk (title, heading path and text indexed with English stemming
//!   for BM25; everything stored) and one stored-only record per document (its full text and links);
//! - `manifest.json`: every indexed file's size, mtime and sha256, so a rebuild re-reads only files
//!   whose content changed, adds new ones and deletes removed ones;
//! - with `--embed`, `vectors.f32` (unit vectors, one per chunk, flat little-endian) and
//!   `vectors.json` (their chunk ids) for hybrid ranking: BM25 and cosine lists fused by reciprocal
//!   rank fusion. Cosine is brute force over all chunks (a few thousand to tens of thousands).
//!
//! It does not watch files, lock against two concurrent builders beyond tantivy's own writer
//! lock, or read pdf.

use crate::chunk::{self, Chunk, ChunkOptions};
use crate::embed::{self, Embedder};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tantivy::collector::TopDocs;
use tantivy::query::{QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING};
use tantivy::{doc, Term};

const MANIFEST: &str = "manifest.json";
const VECTORS: &str = "vectors.f32";
const VECTOR_IDS: &str = "vectors.json";
const FORMAT: u32 = 2;
/// Reciprocal rank fusion constant (the usual 60).
const RRF_K: f32 = 60.0;

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Chunk id, `doc_id#n`.
    pub id: String,
    pub doc_id: String,
    pub source: String,
    pub title: String,
    pub heading: String,
    pub score: f32,
    pub snippet: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Document {
    pub id: String,
    pub source: String,
    pub title: String,
    pub text: String,
    pub links: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hybrid when the index has vectors, else BM25.
    Auto,
    Bm25,
    Hybrid,
    /// Cosine only (for evaluation).
    Dense,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Mode> {
        Ok(match s {
            "auto" => Mode::Auto,
            "bm25" => Mode::Bm25,
            "hybrid" => Mode::Hybrid,
            "dense" => Mode::Dense,
            _ => bail!("unknown search mode `{s}` (auto, bm25, hybrid, dense)"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub chunk: ChunkOptions,
    /// all-MiniLM-L6-v2 directory: compute vectors for hybrid search. None: BM25 only.
    pub embed_model: Option<PathBuf>,
    /// Draw progress bars on stderr.
    pub progress: bool,
    pub embed_batch: usize,
    /// Glob patterns (`*` any run of characters, `?` one) on doc ids to leave out, e.g. `_sources/*`.
    pub exclude: Vec<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            chunk: ChunkOptions::default(),
            embed_model: None,
            progress: false,
            embed_batch: 16,
            exclude: vec![],
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildReport {
    /// Files of a readable kind found under the roots.
    pub files_seen: usize,
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    /// Files that could not be read (path: reason); they are left out of the index.
    pub errors: Vec<String>,
    /// Chunks written by this build.
    pub chunks_indexed: usize,
    pub chunks_embedded: usize,
    pub total_docs: usize,
    pub total_chunks: usize,
    pub seconds: f64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileEntry {
    source: String,
    size: u64,
    mtime_ns: u64,
    sha256: String,
    chunks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Manifest {
    format: u32,
    roots: Vec<String>,
    max_words: usize,
    overlap_words: usize,
    /// The embedding model directory, when the index has vectors.
    embed_model: Option<String>,
    files: BTreeMap<String, FileEntry>,
}

struct Fields {
    kind: Field,
    chunk_id: Field,
    doc_id: Field,
    source: Field,
    title: Field,
    heading: Field,
    text: Field,
    /// Document records: the whole Document as JSON, stored only.
    full: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let stemmed = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let f = Fields {
        kind: b.add_text_field("kind", STRING | STORED),
        chunk_id: b.add_text_field("chunk_id", STRING | STORED),
        doc_id: b.add_text_field("doc_id", STRING | STORED),
        source: b.add_text_field("source", STORED),
        title: b.add_text_field("title", stemmed.clone()),
        heading: b.add_text_field("heading", stemmed.clone()),
        text: b.add_text_field("text", stemmed),
        full: b.add_text_field("full", STORED),
    };
    (b.build(), f)
}

const ANALYZER: &str = "nanbeige_en";
/// Question words that carry no topic ("how do I …"): without this list BM25 ranks FAQ headings
/// that start with "How do I" above the page that answers the question.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "if", "in",
    "into", "is", "it", "its", "me", "my", "of", "on", "or", "so", "that", "the", "their", "then", "there", "these",
    "this", "to", "was", "what", "when", "where", "which", "why", "will", "with", "you", "your",
];

/// Lowercase, drop stop words, English stemming; registered on every opened tantivy index.
fn register_analyzer(index: &tantivy::Index) {
    use tantivy::tokenizer::{
        Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    };
    let a = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(STOP_WORDS.iter().map(|w| w.to_string())))
        .filter(Stemmer::new(Language::English))
        .build();
    index.tokenizers().register(ANALYZER, a);
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let p = dir.join(MANIFEST);
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let m: Manifest = serde_json::from_str(&s).with_context(|| format!("{} is corrupt", p.display()))?;
    if m.format != FORMAT {
        bail!("{}: index format {} (this nanbeige reads {FORMAT}); rebuild it", p.display(), m.format);
    }
    Ok(m)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Vectors by chunk id.
fn read_vectors(dir: &Path) -> Result<(usize, Vec<String>, Vec<f32>)> {
    let ids_p = dir.join(VECTOR_IDS);
    let ids: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&ids_p).with_context(|| format!("reading {}", ids_p.display()))?)
            .with_context(|| format!("{} is corrupt", ids_p.display()))?;
    let vp = dir.join(VECTORS);
    let bytes = std::fs::read(&vp).with_context(|| format!("reading {}", vp.display()))?;
    if bytes.len() % 4 != 0 || (ids.is_empty() && !bytes.is_empty()) {
        bail!("{} is corrupt (size {})", vp.display(), bytes.len());
    }
    let flat: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let dim = if ids.is_empty() { 0 } else { flat.len() / ids.len() };
    if dim * ids.len() != flat.len() {
        bail!("{} is corrupt: {} floats for {} chunks", vp.display(), flat.len(), ids.len());
    }
    Ok((dim, ids, flat))
}

fn write_vectors(dir: &Path, ids: &[String], flat: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_atomic(&dir.join(VECTORS), &bytes)?;
    write_atomic(&dir.join(VECTOR_IDS), serde_json::to_string(ids)?.as_bytes())
}

/// The text a chunk is embedded as: where it is (heading path, else title), then its text.
fn embed_text(c: &Chunk) -> String {
    let place = if c.heading.is_empty() { &c.title } else { &c.heading };
    format!("{place}\n\n{}", c.text)
}

fn bar(show: bool, len: usize, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Files the index reads under the roots, as (doc id, path), sorted by id. With one root, ids are
/// paths relative to it; with several, each is prefixed with its root's folder name.
fn collect_files(roots: &[PathBuf], exclude: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut out = vec![];
    for root in roots {
        let meta = std::fs::metadata(root).with_context(|| format!("cannot index {}", root.display()))?;
        let prefix = if roots.len() > 1 {
            let name = root
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
                .unwrap_or_else(|| "root".into());
            format!("{name}/")
        } else {
            String::new()
        };
        if meta.is_file() {
            if chunk::kind_of(root).is_none() {
                bail!("cannot index {}: not a txt, md or html file", root.display());
            }
            let name = root.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            out.push((format!("{prefix}{name}"), root.clone()));
            continue;
        }
        for e in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name() {
            let e = e.with_context(|| format!("walking {}", root.display()))?;
            if !e.file_type().is_file() || chunk::kind_of(e.path()).is_none() {
                continue;
            }
            let rel = e.path().strip_prefix(root).unwrap_or(e.path());
            let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().to_string()).collect();
            out.push((format!("{prefix}{}", rel.join("/")), e.path().to_path_buf()));
        }
    }
    out.retain(|(id, _)| !exclude.iter().any(|g| glob_match(g, id)));
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// `*` matches any run of characters (slashes included), `?` any one character.
fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    // Iterative matching with backtracking to the last star: linear-ish, no recursion.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Build or update the index in `out` from the files under `roots`.
pub fn build(roots: &[PathBuf], out: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    let t0 = Instant::now();
    if roots.is_empty() {
        bail!("nothing to index: give at least one file or folder");
    }
    chunk::check_options(&opts.chunk)?;
    let files = collect_files(roots, &opts.exclude)?;
    let tdir = out.join("tantivy");
    let old = if out.join(MANIFEST).exists() {
        Some(read_manifest(out)?)
    } else {
        if out.exists()
            && std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.next().is_some()
        {
            bail!("{} exists, is not empty and is not a nanbeige index; refusing to write there", out.display());
        }
        None
    };
    let embed_model = opts.embed_model.as_ref().map(|p| p.canonicalize().unwrap_or(p.clone()).display().to_string());
    // A change of chunking or of embedding means every file is indexed again.
    let mut manifest = match old {
        Some(m)
            if m.max_words == opts.chunk.max_words
                && m.overlap_words == opts.chunk.overlap_words
                && m.embed_model.is_some() == embed_model.is_some() =>
        {
            m
        }
        _ => Manifest::default(),
    };
    let fresh_index = manifest.files.is_empty();
    if fresh_index && tdir.exists() {
        std::fs::remove_dir_all(&tdir).with_context(|| format!("clearing {}", tdir.display()))?;
    }
    std::fs::create_dir_all(&tdir).with_context(|| format!("creating {}", tdir.display()))?;
    let (schema, f) = schema();
    let index = if fresh_index {
        tantivy::Index::create_in_dir(&tdir, schema)?
    } else {
        tantivy::Index::open_in_dir(&tdir)
            .with_context(|| format!("{} is corrupt; delete it and rebuild", tdir.display()))?
    };
    register_analyzer(&index);
    let embedder = match &opts.embed_model {
        Some(p) => Some(Embedder::load(p)?),
        None => None,
    };

    let mut report = BuildReport { files_seen: files.len(), ..Default::default() };
    // Decide what changed: size+mtime first, content hash when those differ.
    let mut todo: Vec<(String, PathBuf, FileEntry, Vec<u8>)> = vec![];
    let seen: HashSet<&str> = files.iter().map(|(id, _)| id.as_str()).collect();
    for (id, path) in &files {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                report.errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let source = path.display().to_string();
        if let Some(e) = manifest.files.get(id) {
            if e.size == meta.len() && e.mtime_ns == mtime_ns && e.source == source {
                report.unchanged += 1;
                continue;
            }
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                report.errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let sha256 = sha256_hex(&bytes);
        if let Some(e) = manifest.files.get_mut(id) {
            if e.sha256 == sha256 && e.source == source {
                // Touched, not changed.
                e.size = meta.len();
                e.mtime_ns = mtime_ns;
                report.unchanged += 1;
                continue;
            }
        }
        let entry = FileEntry { source, size: meta.len(), mtime_ns, sha256, chunks: 0 };
        todo.push((id.clone(), path.clone(), entry, bytes));
    }
    let removed: Vec<String> =
        manifest.files.keys().filter(|id| !seen.contains(id.as_ref() as &str)).cloned().collect();

    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 50_000_000)?;
    let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
    if !fresh_index && manifest.embed_model.is_some() && out.join(VECTORS).exists() {
        let (dim, ids, flat) = read_vectors(out)?;
        for (i, id) in ids.into_iter().enumerate() {
            vectors.insert(id, flat[i * dim..(i + 1) * dim].to_vec());
        }
    }
    let drop_doc = |writer: &mut tantivy::IndexWriter, vectors: &mut HashMap<String, Vec<f32>>, id: &str, n: usize| {
        writer.delete_term(Term::from_field_text(f.doc_id, id));
        for i in 0..n {
            vectors.remove(&format!("{id}#{i}"));
        }
    };
    for id in &removed {
        let n = manifest.files.remove(id).map(|e| e.chunks).unwrap_or(0);
        drop_doc(&mut writer, &mut vectors, id, n);
        report.removed.push(id.clone());
    }

    let pb = bar(opts.progress, todo.len(), "indexing");
    let mut new_chunks: Vec<Chunk> = vec![];
    for (id, path, mut entry, bytes) in todo {
        pb.set_message(id.clone());
        let kind = chunk::kind_of(&path).expect("collected files have a kind");
        let doc = chunk::from_string(&String::from_utf8_lossy(&bytes), kind, &id, &entry.source);
        let chunks = chunk::chunk(&doc, &opts.chunk);
        match manifest.files.get(&id) {
            Some(old) => {
                let n = old.chunks;
                drop_doc(&mut writer, &mut vectors, &id, n);
                report.updated.push(id.clone());
            }
            None => report.added.push(id.clone()),
        }
        for c in &chunks {
            writer.add_document(doc!(
                f.kind => "chunk",
                f.chunk_id => c.id.as_str(),
                f.doc_id => c.doc_id.as_str(),
                f.source => c.source.as_str(),
                f.title => c.title.as_str(),
                f.heading => c.heading.as_str(),
                f.text => c.text.as_str(),
            ))?;
        }
        let full = Document {
            id: doc.id.clone(),
            source: doc.source.clone(),
            title: doc.title.clone(),
            text: doc.text,
            links: doc.links,
        };
        writer.add_document(doc!(
            f.kind => "doc",
            f.doc_id => id.as_str(),
            f.source => entry.source.as_str(),
            f.full => serde_json::to_string(&full)?,
        ))?;
        entry.chunks = chunks.len();
        report.chunks_indexed += chunks.len();
        manifest.files.insert(id, entry);
        new_chunks.extend(chunks);
        pb.inc(1);
    }
    pb.finish_and_clear();

    if let Some(emb) = &embedder {
        let texts: Vec<String> = new_chunks.iter().map(embed_text).collect();
        let pb = bar(opts.progress, texts.len(), "embedding");
        let vecs = emb.embed_all(&texts, opts.embed_batch, |n| pb.inc(n as u64))?;
        pb.finish_and_clear();
        for (c, v) in new_chunks.iter().zip(vecs) {
            vectors.insert(c.id.clone(), v);
        }
        report.chunks_embedded = new_chunks.len();
    }

    writer.commit().context("committing the index")?;
    writer.wait_merging_threads().context("merging index segments")?;
    if embedder.is_some() {
        let mut ids: Vec<String> = vectors.keys().cloned().collect();
        ids.sort();
        let flat: Vec<f32> = ids.iter().flat_map(|id| vectors[id].iter().copied()).collect();
        write_vectors(out, &ids, &flat)?;
    } else {
        for p in [VECTORS, VECTOR_IDS] {
            let _ = std::fs::remove_file(out.join(p));
        }
    }
    manifest.format = FORMAT;
    manifest.roots = roots.iter().map(|r| r.display().to_string()).collect();
    manifest.max_words = opts.chunk.max_words;
    manifest.overlap_words = opts.chunk.overlap_words;
    manifest.embed_model = embed_model;
    write_atomic(&out.join(MANIFEST), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    report.total_docs = manifest.files.len();
    report.total_chunks = manifest.files.values().map(|e| e.chunks).sum();
    report.seconds = t0.elapsed().as_secs_f64();
    report.bytes = dir_size(out);
    Ok(report)
}

/// An opened index, ready to search. Safe to share between threads.
pub struct Index {
    dir: PathBuf,
    reader: tantivy::IndexReader,
    index: tantivy::Index,
    f: Fields,
    /// (dim, chunk ids, flat unit vectors) when the index was built with `--embed`.
    vectors: Option<(usize, Vec<String>, Vec<f32>)>,
    embed_model: Option<PathBuf>,
    embedder: Mutex<Option<Arc<Embedder>>>,
    pub docs: usize,
    pub chunks: usize,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("docs", &self.docs)
            .field("chunks", &self.chunks)
            .field("vectors", &self.vectors.is_some())
            .finish()
    }
}

impl Index {
    pub fn open(dir: &Path) -> Result<Index> {
        if !dir.is_dir() {
            bail!(
                "index {} does not exist (build it with `nanbeige index PATH --out {}`)",
                dir.display(),
                dir.display()
            );
        }
        if !dir.join(MANIFEST).is_file() {
            bail!("{} is not a nanbeige index (no {MANIFEST})", dir.display());
        }
        let m = read_manifest(dir)?;
        let tdir = dir.join("tantivy");
        let index = tantivy::Index::open_in_dir(&tdir)
            .with_context(|| format!("{} is corrupt; rebuild the index", tdir.display()))?;
        register_analyzer(&index);
        let (_, f) = schema();
        if index.schema().get_field("full").is_err() {
            bail!("{} was not written by nanbeige index", tdir.display());
        }
        let reader = index.reader().with_context(|| format!("opening {}", tdir.display()))?;
        let vectors = match &m.embed_model {
            Some(_) => Some(read_vectors(dir)?),
            None => None,
        };
        Ok(Index {
            dir: dir.to_path_buf(),
            reader,
            index,
            f,
            vectors,
            embed_model: m.embed_model.map(PathBuf::from),
            embedder: Mutex::new(None),
            docs: m.files.len(),
            chunks: m.files.values().map(|e| e.chunks).sum(),
        })
    }

    pub fn has_vectors(&self) -> bool {
        self.vectors.is_some()
    }

    /// Use another copy of the embedding model than the one the index was built with.
    pub fn set_embed_model(&mut self, dir: &Path) {
        self.embed_model = Some(dir.to_path_buf());
        *self.embedder.lock().expect("embedder lock") = None;
    }

    /// The best `k` chunks for a query: hybrid when the index has vectors, else BM25.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        self.search_mode(query, k, Mode::Auto)
    }

    pub fn search_mode(&self, query: &str, k: usize, mode: Mode) -> Result<Vec<Hit>> {
        if query.trim().is_empty() || k == 0 {
            return Ok(vec![]);
        }
        let mode = match mode {
            Mode::Auto if self.vectors.is_some() => Mode::Hybrid,
            Mode::Auto => Mode::Bm25,
            Mode::Hybrid | Mode::Dense if self.vectors.is_none() => {
                bail!("index {} has no vectors (build it with --embed)", self.dir.display())
            }
            m => m,
        };
        let searcher = self.reader.searcher();
        // Fusion looks deeper than k so that a chunk ranked moderately by both lists can win.
        let depth = (k * 4).max(50);
        let ranked: Vec<(String, f32)> = match mode {
            Mode::Bm25 => self.bm25(&searcher, query, k)?,
            Mode::Dense => self.dense(query, k)?,
            _ => {
                let mut fused: HashMap<String, f32> = HashMap::new();
                for list in [self.bm25(&searcher, query, depth)?, self.dense(query, depth)?] {
                    for (rank, (id, _)) in list.into_iter().enumerate() {
                        *fused.entry(id).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
                    }
                }
                let mut v: Vec<(String, f32)> = fused.into_iter().collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                v.truncate(k);
                v
            }
        };
        let terms = query_terms(query);
        let mut hits = vec![];
        for (id, score) in ranked {
            let d = match self.stored_by(&searcher, self.f.chunk_id, &id)? {
                Some(d) => d,
                None => continue, // a vector whose chunk is gone: skip rather than fail the search
            };
            let get = |fl: Field| d.get_first(fl).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            let text = get(self.f.text);
            hits.push(Hit {
                id,
                doc_id: get(self.f.doc_id),
                source: get(self.f.source),
                title: get(self.f.title),
                heading: get(self.f.heading),
                score,
                snippet: snippet(&text, &terms, 40),
            });
        }
        Ok(hits)
    }

    fn bm25(&self, searcher: &tantivy::Searcher, query: &str, n: usize) -> Result<Vec<(String, f32)>> {
        let mut qp = QueryParser::for_index(&self.index, vec![self.f.title, self.f.heading, self.f.text]);
        qp.set_field_boost(self.f.title, 1.5);
        qp.set_field_boost(self.f.heading, 2.0);
        // Lenient: user text with quotes, colons or brackets is still a query, not a syntax error.
        let (q, _) = qp.parse_query_lenient(query);
        let top = searcher.search(&q, &TopDocs::with_limit(n))?;
        let mut out = vec![];
        for (score, addr) in top {
            let d: tantivy::TantivyDocument = searcher.doc(addr)?;
            if let Some(id) = d.get_first(self.f.chunk_id).and_then(|v| v.as_str()) {
                out.push((id.to_string(), score));
            }
        }
        Ok(out)
    }

    fn embedder(&self) -> Result<Arc<Embedder>> {
        let mut g = self.embedder.lock().expect("embedder lock");
        if let Some(e) = &*g {
            return Ok(e.clone());
        }
        let dir = self.embed_model.as_ref().context("index has no embedding model")?;
        let e = Arc::new(
            Embedder::load(dir).with_context(|| format!("loading the embedding model for {}", self.dir.display()))?,
        );
        *g = Some(e.clone());
        Ok(e)
    }

    fn dense(&self, query: &str, n: usize) -> Result<Vec<(String, f32)>> {
        let (dim, ids, flat) = self.vectors.as_ref().context("index has no vectors")?;
        let q = self.embedder()?.embed(&[query])?.pop().context("no query embedding")?;
        if q.len() != *dim {
            bail!("embedding model gives {}-d vectors but the index holds {dim}-d ones", q.len());
        }
        let mut scored: Vec<(usize, f32)> =
            (0..ids.len()).map(|i| (i, embed::dot(&q, &flat[i * dim..(i + 1) * dim]))).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(scored.into_iter().take(n).map(|(i, s)| (ids[i].clone(), s)).collect())
    }

    fn stored_by(
        &self,
        searcher: &tantivy::Searcher,
        field: Field,
        value: &str,
    ) -> Result<Option<tantivy::TantivyDocument>> {
        let q = TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic);
        let top = searcher.search(&q, &TopDocs::with_limit(8))?;
        for (_, addr) in top {
            let d: tantivy::TantivyDocument = searcher.doc(addr)?;
            // doc_id matches a document's chunks too; we want the kind asked for.
            let kind = d.get_first(self.f.kind).and_then(|v| v.as_str()).unwrap_or("");
            if (field == self.f.chunk_id) == (kind == "chunk") {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// A whole document by doc id (`library/functools.html`), or the document holding a chunk
    /// (`library/functools.html#3`) or anchor (`library/functools.html#functools.cache`).
    pub fn document(&self, id: &str) -> Result<Option<Document>> {
        let searcher = self.reader.searcher();
        let mut candidates = vec![id.to_string()];
        if let Some(i) = id.rfind('#') {
            candidates.push(id[..i].to_string());
        }
        for c in candidates {
            let doc_q = TermQuery::new(Term::from_field_text(self.f.doc_id, &c), IndexRecordOption::Basic);
            let kind_q = TermQuery::new(Term::from_field_text(self.f.kind, "doc"), IndexRecordOption::Basic);
            let q = tantivy::query::BooleanQuery::intersection(vec![Box::new(doc_q), Box::new(kind_q)]);
            if let Some((_, addr)) = searcher.search(&q, &TopDocs::with_limit(1))?.into_iter().next() {
                let d: tantivy::TantivyDocument = searcher.doc(addr)?;
                let full = d.get_first(self.f.full).and_then(|v| v.as_str()).context("document record without text")?;
                return Ok(Some(serde_json::from_str(full).context("corrupt document record")?));
            }
        }
        Ok(None)
    }
}

/// Lowercased alphanumeric words of a query.
fn query_terms(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 1).map(|w| w.to_lowercase()).collect()
}

fn word_matches(word: &str, terms: &[String]) -> bool {
    let w: String = word.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    if w.is_empty() {
        return false;
    }
    // A crude stem match (cache ~ caching) is enough to place a snippet.
    terms
        .iter()
        .any(|t| w == *t || (t.len() >= 4 && w.len() >= 4 && (w.starts_with(&t[..4]) && t.starts_with(&w[..4]))))
}

/// The `width`-word window of `text` with the most query-word hits.
fn snippet(text: &str, terms: &[String], width: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= width {
        return words.join(" ");
    }
    let hit: Vec<u32> = words.iter().map(|w| word_matches(w, terms) as u32).collect();
    let mut cur: u32 = hit[..width].iter().sum();
    let mut best = (cur, 0usize);
    for start in 1..=words.len() - width {
        cur = cur + hit[start + width - 1] - hit[start - 1];
        if cur > best.0 {
            best = (cur, start);
        }
    }
    let s = best.1;
    let mut out = words[s..s + width].join(" ");
    if s > 0 {
        out = format!("… {out}");
    }
    if s + width < words.len() {
        out.push_str(" …");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_snippets() {
        assert!(glob_match("_sources/*", "_sources/library/os.rst.txt"));
        assert!(glob_match("genindex*", "genindex-A.html"));
        assert!(glob_match("*.txt", "a/b/c.txt"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("_sources/*", "library/_sources.html"));
        assert!(!glob_match("genindex*", "library/genindex.html"));
        let text = (0..100)
            .map(|i| if i == 70 { "caching".to_string() } else { format!("w{i}") })
            .collect::<Vec<_>>()
            .join(" ");
        let s = snippet(&text, &query_terms("how does cache work"), 10);
        assert!(s.starts_with("… ") && s.contains("caching") && s.ends_with(" …"), "{s}");
        assert_eq!(snippet("short text", &[], 10), "short text");
    }
}
