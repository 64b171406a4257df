//! The in-process all-MiniLM-L6-v2 against transformers' embeddings
//! (tests/fixtures/minilm_embeddings.json, made by scripts/reference/make_minilm_fixture.py), and
//! hybrid search with real vectors finding a paraphrase that shares no word with its document.
//! Needs the model in the cache: `nanbeige pull minilm` (scripts/test.sh does it).

use nanbeige_index::embed::{dot, Embedder};
use nanbeige_index::{build, BuildOptions, Index, Mode};
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    let cache = std::env::var_os("NANBEIGE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
        base.join("nanbeige")
    });
    let d = cache.join("models/all-MiniLM-L6-v2");
    assert!(d.join("model.safetensors").exists(), "{} missing: run `nanbeige pull minilm`", d.display());
    d
}

#[test]
fn embeddings_match_transformers() {
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/minilm_embeddings.json")).expect("fixture parses");
    let e = Embedder::load(&model_dir()).unwrap();
    assert_eq!(e.dim, 384);
    let cases = fx["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // Batched (with padding) and one at a time must both match.
    let batched = e.embed(&texts).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let want: Vec<f32> = c["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let single = e.embed(&[texts[i]]).unwrap().remove(0);
        for got in [&batched[i], &single] {
            let norm = dot(got, got).sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
            let cos = dot(got, &want) / norm / dot(&want, &want).sqrt();
            assert!(cos >= 0.999, "case {i} ({:?}…): cosine {cos}", &texts[i][..texts[i].len().min(30)]);
        }
    }
    // Sanity that the fixture discriminates: different texts are far apart.
    assert!(dot(&batched[0], &batched[2]) < 0.5);
}

#[test]
fn hybrid_finds_a_paraphrase_bm25_cannot() {
    let t = tempfile::tempdir().unwrap();
    let docs = t.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("budget.txt"), "The quarterly budget for the penguin sanctuary was approved.\n").unwrap();
    std::fs::write(docs.join("cars.md"), "# Engines\n\nA diesel engine ignites fuel by compression.\n").unwrap();
    std::fs::write(docs.join("cook.md"), "# Bread\n\nKnead the dough for ten minutes, then let it rise.\n").unwrap();
    let out = t.path().join("idx");
    let opts = BuildOptions { embed_model: Some(model_dir()), ..Default::default() };
    let r = build(std::slice::from_ref(&docs), &out, &opts).unwrap();
    assert_eq!(r.chunks_embedded, 3);
    let idx = Index::open(&out).unwrap();
    assert!(idx.has_vectors());
    let q = "money allocated to a refuge for flightless seabirds";
    assert!(idx.search_mode(q, 3, Mode::Bm25).unwrap().is_empty(), "query shares no word with the docs");
    let hits = idx.search(q, 3).unwrap(); // auto = hybrid here
    assert_eq!(hits[0].doc_id, "budget.txt");
    assert_eq!(idx.search_mode("how to make a loaf rise", 1, Mode::Dense).unwrap()[0].doc_id, "cook.md");

    // Incremental with vectors: a changed file gets new vectors, the others keep theirs.
    std::fs::write(docs.join("cook.md"), "# Soup\n\nSimmer the onions in stock.\n").unwrap();
    let r = build(std::slice::from_ref(&docs), &out, &opts).unwrap();
    assert_eq!((r.updated.len(), r.chunks_embedded, r.total_chunks), (1, 1, 3));
    let idx = Index::open(&out).unwrap();
    assert_eq!(idx.search_mode("a hot liquid meal made with vegetables", 1, Mode::Dense).unwrap()[0].doc_id, "cook.md");
    assert_eq!(idx.search(q, 1).unwrap()[0].doc_id, "budget.txt");
}
