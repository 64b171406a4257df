//! End-to-end: build an index over a small folder of md/txt/html files, search it, change the
//! folder (modify, add, delete, touch) and check that a rebuild re-reads exactly the changed files
//! and that results follow; bad inputs give errors, not panics.

use nanbeige_index::{build, BuildOptions, Index, Mode};
use std::fs;
use std::path::{Path, PathBuf};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn corpus() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let docs = t.path().join("docs");
    write(&docs, "guide/install.md", "# Installing Frobnicator\n\nDownload the tarball and run `make install`.\n\n## Windows\n\nUse the MSI installer from the releases page.\n");
    write(
        &docs,
        "guide/usage.md",
        "# Using Frobnicator\n\nCall `frob --turbo` to enable turbo mode, which doubles the spin rate.\n",
    );
    write(&docs, "notes.txt", "Meeting notes\n\nThe quarterly budget for the penguin sanctuary was approved.\n");
    write(
        &docs,
        "api/widgets.html",
        "<html><head><title>Widgets API</title><script>var secret='zebra';</script></head><body><nav>Home Menu</nav>\
         <div role='main'><h1 id='widgets'>Widgets</h1><p>A widget renders a <a href='../guide/usage.md'>sprocket</a> on screen.</p>\
         <h2 id='resize'>Resizing</h2><p>Call resize(width, height) to change the widget geometry.</p></div></body></html>",
    );
    write(&docs, "image.png", "not text"); // not a readable kind: ignored
    (t, docs)
}

fn ids(hits: &[nanbeige_index::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.doc_id.clone()).collect()
}

#[test]
fn build_search_document_and_incremental_rebuild() {
    let (t, docs) = corpus();
    let out = t.path().join("idx");
    let opts = BuildOptions::default();
    let r = build(std::slice::from_ref(&docs), &out, &opts).unwrap();
    assert_eq!(r.files_seen, 4);
    assert_eq!(r.added, vec!["api/widgets.html", "guide/install.md", "guide/usage.md", "notes.txt"]);
    assert!(r.updated.is_empty() && r.removed.is_empty() && r.unchanged == 0);
    assert_eq!(r.total_docs, 4);
    assert!(r.total_chunks >= 6, "{r:?}");
    assert!(r.bytes > 0);

    let idx = Index::open(&out).unwrap();
    assert!(!idx.has_vectors());
    let hits = idx.search("penguin budget", 3).unwrap();
    assert_eq!(hits[0].doc_id, "notes.txt");
    assert_eq!(hits[0].id, "notes.txt#0");
    assert!(hits[0].snippet.contains("penguin"));
    assert_eq!(hits[0].source, docs.join("notes.txt").display().to_string());
    // Stemming: "resizing geometry" finds "Resizing … geometry", with the heading path.
    let hits = idx.search("resize the geometry of a widget", 2).unwrap();
    assert_eq!(hits[0].doc_id, "api/widgets.html");
    assert_eq!(hits[0].title, "Widgets API");
    assert_eq!(hits[0].heading, "Widgets > Resizing");
    // Script text and nav chrome are not indexed.
    assert!(idx.search("zebra", 5).unwrap().is_empty());
    assert!(idx.search("menu", 5).unwrap().is_empty());
    // Query syntax characters do not break the search.
    assert!(idx.search("\"frob --turbo\" AND (spin: [rate", 5).is_ok());
    assert!(idx.search("   ", 5).unwrap().is_empty());

    let d = idx.document("api/widgets.html").unwrap().unwrap();
    assert_eq!(d.title, "Widgets API");
    assert_eq!(d.links, vec!["guide/usage.md"]);
    assert!(d.text.contains("## Resizing\n\nCall resize(width, height)"));
    // A chunk id or an anchor gives its document.
    assert_eq!(idx.document("api/widgets.html#1").unwrap().unwrap().id, "api/widgets.html");
    assert_eq!(idx.document("api/widgets.html#resize").unwrap().unwrap().id, "api/widgets.html");
    assert!(idx.document("nope.md").unwrap().is_none());
    drop(idx);

    // Nothing changed: nothing re-read.
    let r = build(std::slice::from_ref(&docs), &out, &opts).unwrap();
    assert!(r.added.is_empty() && r.updated.is_empty() && r.removed.is_empty(), "{r:?}");
    assert_eq!((r.unchanged, r.chunks_indexed), (4, 0));

    // Modify one file, add one, delete one, touch one (same content, new mtime).
    write(&docs, "guide/usage.md", "# Using Frobnicator\n\nCall `frob --warp` to enable warp drive.\n");
    write(&docs, "faq.md", "# FAQ\n\nWhy is the kettle singing? Because of the flux capacitor.\n");
    fs::remove_file(docs.join("notes.txt")).unwrap();
    let install = docs.join("guide/install.md");
    let content = fs::read(&install).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&install, content).unwrap();
    let r = build(std::slice::from_ref(&docs), &out, &opts).unwrap();
    assert_eq!(r.added, vec!["faq.md"]);
    assert_eq!(r.updated, vec!["guide/usage.md"]);
    assert_eq!(r.removed, vec!["notes.txt"]);
    assert_eq!(r.unchanged, 2, "touched file is unchanged: {r:?}");
    assert_eq!(r.total_docs, 4);

    let idx = Index::open(&out).unwrap();
    assert!(idx.search("penguin", 5).unwrap().is_empty(), "deleted file still found");
    assert!(idx.document("notes.txt").unwrap().is_none());
    assert!(idx.search("turbo", 5).unwrap().is_empty(), "old content still found");
    assert_eq!(ids(&idx.search("warp drive", 1).unwrap()), vec!["guide/usage.md"]);
    assert_eq!(ids(&idx.search("kettle singing", 1).unwrap()), vec!["faq.md"]);
    assert_eq!(ids(&idx.search("MSI installer", 1).unwrap()), vec!["guide/install.md"]);
    // No stale duplicates of the updated file.
    assert_eq!(idx.search("Frobnicator", 10).unwrap().iter().filter(|h| h.doc_id == "guide/usage.md").count(), 1);
    assert!(idx.search_mode("x", 3, Mode::Hybrid).unwrap_err().to_string().contains("no vectors"));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("missing");
    let e = build(std::slice::from_ref(&missing), &t.path().join("idx"), &BuildOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("cannot index"), "{e:#}");

    let e = Index::open(&missing).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");

    // A folder that is not an index.
    write(t.path(), "plain/readme.md", "# hi\n");
    let e = Index::open(&t.path().join("plain")).unwrap_err();
    assert!(e.to_string().contains("not a nanbeige index"), "{e}");
    // ... and build refuses to write into it.
    let e = build(&[t.path().join("plain")], &t.path().join("plain"), &BuildOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a nanbeige index"), "{e}");

    // Corrupt manifest and corrupt tantivy data.
    let out = t.path().join("idx");
    build(&[t.path().join("plain")], &out, &BuildOptions::default()).unwrap();
    fs::write(out.join("manifest.json"), "{ not json").unwrap();
    assert!(format!("{:#}", Index::open(&out).unwrap_err()).contains("corrupt"));
    let out2 = t.path().join("idx2");
    build(&[t.path().join("plain")], &out2, &BuildOptions::default()).unwrap();
    fs::write(out2.join("tantivy/meta.json"), "garbage").unwrap();
    assert!(format!("{:#}", Index::open(&out2).unwrap_err()).contains("corrupt"));

    // A single unsupported file, and an empty root list.
    write(t.path(), "x.pdf", "%PDF");
    assert!(build(&[t.path().join("x.pdf")], &t.path().join("i3"), &BuildOptions::default()).is_err());
    assert!(build(&[], &t.path().join("i4"), &BuildOptions::default()).is_err());

    // Invalid UTF-8 is read lossily, not an error.
    fs::create_dir_all(t.path().join("bin")).unwrap();
    fs::write(t.path().join("bin/odd.txt"), b"caf\xe9 latte \xff\xfe").unwrap();
    let r = build(&[t.path().join("bin")], &t.path().join("i5"), &BuildOptions::default()).unwrap();
    assert_eq!(r.added.len(), 1);
    let idx = Index::open(&t.path().join("i5")).unwrap();
    assert_eq!(idx.search("latte", 1).unwrap().len(), 1);
}
