//! Documents → overlapping chunks. A file (txt, md, html) is read into a `SourceDoc` (title, clean
//! text, links); its text is split into sections at heading lines (`# …`, outside ``` fences; html
//! text from html.rs has the same form, plain text has no headings), and each section is packed
//! paragraph by paragraph into chunks of at most `max_words` words, the next chunk repeating the
//! last ~`overlap_words` words of the previous one. Each chunk carries its document's title, its
//! heading path (`A > B > C`), the source path and an id `doc_id#n`.
//! It does not do pdf, and does not look inside code blocks for structure.

use anyhow::{bail, Context, Result};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Markdown,
    Html,
}

/// The kind of a file by its extension; None for files the index does not read.
pub fn kind_of(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "text" | "rst" => Some(Kind::Text),
        "md" | "markdown" => Some(Kind::Markdown),
        "html" | "htm" | "xhtml" => Some(Kind::Html),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceDoc {
    /// Path relative to the indexed root, `/`-separated.
    pub id: String,
    /// The file's path as given (root joined with the relative path).
    pub source: String,
    pub title: String,
    pub text: String,
    pub links: Vec<String>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: String,
    pub doc_id: String,
    pub source: String,
    pub title: String,
    /// Heading path, outermost first, joined with ` > ` (empty before the first heading).
    pub heading: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    pub max_words: usize,
    pub overlap_words: usize,
}

impl Default for ChunkOptions {
    /// ~200 words stays inside MiniLM's 256-token window for ordinary prose.
    fn default() -> Self {
        ChunkOptions { max_words: 200, overlap_words: 40 }
    }
}

/// Read one file into a document. Invalid UTF-8 is replaced, not an error; a file the index
/// does not read is.
pub fn load(path: &Path, id: &str) -> Result<SourceDoc> {
    let kind = kind_of(path).with_context(|| format!("{}: not a txt, md or html file", path.display()))?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let raw = String::from_utf8_lossy(&bytes);
    Ok(from_string(&raw, kind, id, &path.display().to_string()))
}

/// Build a document from text already in memory.
pub fn from_string(raw: &str, kind: Kind, id: &str, source: &str) -> SourceDoc {
    let stem = Path::new(id).file_stem().and_then(|s| s.to_str()).unwrap_or(id).to_string();
    let (title, text, links) = match kind {
        Kind::Html => {
            // Resolve relative links against the document's place in the indexed tree, then give
            // them back as tree-relative paths (`library/functools.html` + `../glossary.html`
            // → `glossary.html`); absolute URLs stay as they are.
            let p = crate::html::extract_with_base(raw, Some(&format!("file:///{id}")));
            let links =
                p.links.into_iter().map(|l| l.strip_prefix("file:///").map(str::to_string).unwrap_or(l)).collect();
            (if p.title.is_empty() { stem } else { p.title }, p.text, links)
        }
        Kind::Markdown => {
            let title = sections(raw, true).iter().find_map(|s| s.path.first().cloned()).unwrap_or(stem);
            (title, raw.replace("\r\n", "\n"), markdown_links(raw))
        }
        Kind::Text => {
            let title = raw.lines().map(str::trim).find(|l| !l.is_empty()).map(|l| cut_words(l, 16)).unwrap_or(stem);
            (title, raw.replace("\r\n", "\n"), vec![])
        }
    };
    SourceDoc { id: id.to_string(), source: source.to_string(), title, text, links, kind }
}

fn cut_words(s: &str, n: usize) -> String {
    s.split_whitespace().take(n).collect::<Vec<_>>().join(" ")
}

/// `[text](target)` links in markdown, in order, without duplicates.
fn markdown_links(s: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut rest = s;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(j) = rest.find(')') {
            let target = rest[..j].split_whitespace().next().unwrap_or("").to_string();
            if !target.is_empty() && !target.starts_with('#') && !out.contains(&target) {
                out.push(target);
            }
            rest = &rest[j..];
        }
    }
    out
}

struct Section {
    path: Vec<String>,
    paragraphs: Vec<String>,
}

/// Split text into sections at heading lines; `headings` false treats every line as body.
fn sections(text: &str, headings: bool) -> Vec<Section> {
    let mut out = vec![Section { path: vec![], paragraphs: vec![] }];
    // (level, title) of the open headings.
    let mut stack: Vec<(usize, String)> = vec![];
    let mut para = String::new();
    let mut in_fence = false;
    let flush = |para: &mut String, out: &mut Vec<Section>| {
        let p = para.trim_matches('\n').to_string();
        if !p.trim().is_empty() {
            out.last_mut().expect("one section").paragraphs.push(p);
        }
        para.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        let level = trimmed.chars().take_while(|&c| c == '#').count();
        let is_heading = headings
            && !in_fence
            && (1..=6).contains(&level)
            && trimmed[level..].starts_with(' ')
            && !trimmed[level..].trim().is_empty();
        if is_heading {
            flush(&mut para, &mut out);
            let title = trimmed[level..].trim().trim_end_matches('#').trim().to_string();
            while stack.last().is_some_and(|(l, _)| *l >= level) {
                stack.pop();
            }
            stack.push((level, title));
            out.push(Section { path: stack.iter().map(|(_, t)| t.clone()).collect(), paragraphs: vec![] });
        } else if line.trim().is_empty() && !in_fence {
            flush(&mut para, &mut out);
        } else {
            para.push_str(line);
            para.push('\n');
        }
    }
    flush(&mut para, &mut out);
    out.retain(|s| !s.paragraphs.is_empty());
    out
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// The last `n` words of `s` (whitespace collapsed).
fn tail_words(s: &str, n: usize) -> String {
    let w: Vec<&str> = s.split_whitespace().collect();
    w[w.len().saturating_sub(n)..].join(" ")
}

/// Split a document into chunks.
pub fn chunk(doc: &SourceDoc, opts: &ChunkOptions) -> Vec<Chunk> {
    let max = opts.max_words.max(8);
    let overlap = opts.overlap_words.min(max / 2);
    let mut chunks: Vec<(String, String)> = vec![];
    for sec in sections(&doc.text, doc.kind != Kind::Text) {
        // Units: paragraphs, with any paragraph longer than a chunk cut into pieces.
        let mut units: Vec<String> = vec![];
        for p in &sec.paragraphs {
            if words(p) <= max {
                units.push(p.clone());
            } else {
                let w: Vec<&str> = p.split_whitespace().collect();
                let step = max - overlap;
                let mut i = 0;
                loop {
                    units.push(w[i..(i + max).min(w.len())].join(" "));
                    if i + max >= w.len() {
                        break;
                    }
                    i += step;
                }
            }
        }
        let heading = sec.path.join(" > ");
        let mut cur: Vec<String> = vec![];
        let mut cur_words = 0;
        // Whether `cur` holds anything beyond the overlap carried from the previous chunk.
        let mut fresh = false;
        for u in units {
            let uw = words(&u);
            if cur_words + uw > max && fresh {
                let text = cur.join("\n\n");
                let carry = tail_words(&text, overlap);
                chunks.push((heading.clone(), text));
                cur = if carry.is_empty() || uw + words(&carry) > max { vec![] } else { vec![carry] };
                cur_words = cur.iter().map(|c| words(c)).sum();
            }
            cur_words += uw;
            cur.push(u);
            fresh = true;
        }
        if fresh {
            chunks.push((heading, cur.join("\n\n")));
        }
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, (heading, text))| Chunk {
            id: format!("{}#{i}", doc.id),
            doc_id: doc.id.clone(),
            source: doc.source.clone(),
            title: doc.title.clone(),
            heading,
            text,
        })
        .collect()
}

/// Check a chunk-options pair from the command line.
pub fn check_options(o: &ChunkOptions) -> Result<()> {
    if o.max_words < 8 || o.overlap_words >= o.max_words {
        bail!("chunk size must be at least 8 words and larger than the overlap");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(text: &str) -> SourceDoc {
        from_string(text, Kind::Markdown, "notes/guide.md", "/root/notes/guide.md")
    }

    #[test]
    fn markdown_sections_get_heading_paths_and_ids() {
        let d = md("# Guide\n\nIntro text.\n\n## Install\n\nRun the [installer](setup.md).\n\n```\n# not a heading\n\nstill code\n```\n\n### Linux\n\nUse apt.\n\n## Usage\n\nCall it.\n");
        assert_eq!(d.title, "Guide");
        assert_eq!(d.links, vec!["setup.md"]);
        let c = chunk(&d, &ChunkOptions::default());
        let got: Vec<(&str, &str, &str)> =
            c.iter().map(|c| (c.id.as_str(), c.heading.as_str(), c.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("notes/guide.md#0", "Guide", "Intro text."),
                (
                    "notes/guide.md#1",
                    "Guide > Install",
                    "Run the [installer](setup.md).\n\n```\n# not a heading\n\nstill code\n```"
                ),
                ("notes/guide.md#2", "Guide > Install > Linux", "Use apt."),
                ("notes/guide.md#3", "Guide > Usage", "Call it."),
            ]
        );
        assert!(c
            .iter()
            .all(|c| c.title == "Guide" && c.source == "/root/notes/guide.md" && c.doc_id == "notes/guide.md"));
    }

    #[test]
    fn long_sections_split_with_overlap_and_bounded_size() {
        let para = |k: usize| (0..30).map(|i| format!("p{k}w{i}")).collect::<Vec<_>>().join(" ");
        let body: Vec<String> = (0..10).map(para).collect();
        let d = from_string(&body.join("\n\n"), Kind::Text, "a.txt", "a.txt");
        let c = chunk(&d, &ChunkOptions { max_words: 100, overlap_words: 20 });
        assert!(c.len() >= 3, "{} chunks", c.len());
        for w in c.windows(2) {
            assert!(words(&w[0].text) <= 100);
            // The next chunk starts with the previous one's last 20 words.
            assert!(w[1].text.starts_with(&tail_words(&w[0].text, 20)), "{:?}", w);
        }
        // Every word of the document is in some chunk.
        let all: String = c.iter().map(|c| c.text.clone()).collect::<Vec<_>>().join(" ");
        for k in 0..10 {
            assert!(all.contains(&format!("p{k}w29")));
        }
        // One huge paragraph is cut too.
        let huge = (0..1000).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let c = chunk(
            &from_string(&huge, Kind::Text, "h.txt", "h.txt"),
            &ChunkOptions { max_words: 100, overlap_words: 10 },
        );
        assert!(c.iter().all(|c| words(&c.text) <= 100));
        assert!(c.last().unwrap().text.ends_with("w999"));
    }

    #[test]
    fn text_files_have_no_headings_and_html_links_resolve_in_tree() {
        let d = from_string("# just a line\n\nbody", Kind::Text, "x.txt", "x.txt");
        assert_eq!(d.title, "# just a line");
        assert!(chunk(&d, &ChunkOptions::default()).iter().all(|c| c.heading.is_empty()));
        let h = from_string(
            "<title>T</title><h1>Top</h1><p>a <a href='../glossary.html#g'>g</a> <a href='https://x.org/'>x</a></p><h2>Sub</h2><p>b</p>",
            Kind::Html,
            "library/f.html",
            "/d/library/f.html",
        );
        assert_eq!(h.links, vec!["glossary.html#g", "https://x.org/"]);
        let c = chunk(&h, &ChunkOptions::default());
        assert_eq!(c.iter().map(|c| c.heading.as_str()).collect::<Vec<_>>(), vec!["Top", "Top > Sub"]);
        assert_eq!(c[0].title, "T");
    }
}
