//! Bad input is an error, never a panic: missing or corrupt tokenizer files, GGUF files without (or
//! with unusable) tokenizer metadata, broken templates and templates that refuse a conversation.

mod common;

use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use common::*;
use nanbeige_text::template::TemplateError;
use nanbeige_text::{ChatTemplate, TextAssets, Tokenizer};
use serde_json::json;

fn gguf(meta: Vec<(&str, Value)>) -> gguf_file::Content {
    let mut buf = Cursor::new(Vec::new());
    let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut buf, &refs, &[]).unwrap();
    buf.set_position(0);
    gguf_file::Content::read(&mut buf).unwrap()
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

/// A byte-level vocabulary small enough to write by hand.
fn tiny_gpt2(pre: &str) -> Vec<(&'static str, Value)> {
    let pre: &'static str = Box::leak(pre.to_string().into_boxed_str());
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens",
            strings(&["<|end|>", "a", "b", "ab", "Ġ", "Ġab"]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array([3, 1, 1, 1, 1, 1].map(Value::I32).to_vec()),
        ),
        ("tokenizer.ggml.merges", strings(&["a b", "Ġ ab"])),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ]
}

#[test]
fn missing_tokenizer_json() {
    let dir = temp_dir("missing");
    assert!(err_text(TextAssets::from_hf_dir(&dir)).contains("tokenizer.json"));
    assert!(Tokenizer::from_file(&dir.join("tokenizer.json")).is_err());
    assert!(TextAssets::from_hf_dir(&dir.join("does-not-exist")).is_err());
}

#[test]
fn corrupt_json_files() {
    let dir = temp_dir("corrupt");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": [1, 2").unwrap();
    assert!(Tokenizer::from_file(&dir.join("tokenizer.json")).is_err());
    assert!(TextAssets::from_hf_dir(&dir).is_err());

    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"version\": \"1.0\", \"model\": {\"type\": \"Nope\"}}",
    )
    .unwrap();
    assert!(TextAssets::from_hf_dir(&dir).is_err());

    std::fs::copy(
        fixtures().join("spm/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), "{\"bos_token\": ").unwrap();
    assert!(err_text(TextAssets::from_hf_dir(&dir)).contains("tokenizer_config.json"));
    std::fs::write(dir.join("tokenizer_config.json"), "{\"chat_template\": 3}").unwrap();
    assert!(TextAssets::from_hf_dir(&dir).is_err());
}

#[test]
fn gguf_without_tokenizer_metadata() {
    let content = gguf(vec![(
        "general.architecture",
        Value::String("llama".into()),
    )]);
    assert!(err_text(Tokenizer::from_gguf(&content)).contains("no tokenizer metadata"));
    assert!(TextAssets::from_gguf(&content).is_err());

    let content = gguf(vec![("tokenizer.ggml.model", Value::String("gpt2".into()))]);
    assert!(err_text(Tokenizer::from_gguf(&content)).contains("tokenizer.ggml.tokens"));
}

#[test]
fn unknown_tokenizer_model_and_pre_tokenizer() {
    let mut meta = tiny_gpt2("default");
    meta[1].1 = Value::String("bert".into());
    assert!(err_text(Tokenizer::from_gguf(&gguf(meta)))
        .contains("unsupported GGUF tokenizer model 'bert'"));

    let e = err_text(Tokenizer::from_gguf(&gguf(tiny_gpt2("made-up-pre"))));
    assert!(e.contains("made-up-pre") && e.contains("smollm"), "{e}");
}

#[test]
fn malformed_gguf_metadata() {
    // Wrong types, an out-of-range special id, merges naming unknown tokens, missing scores.
    let mut meta = tiny_gpt2("default");
    meta[3].1 = Value::String("not a list".into());
    assert!(Tokenizer::from_gguf(&gguf(meta)).is_err());

    let mut meta = tiny_gpt2("default");
    meta[6].1 = Value::U32(99);
    assert!(err_text(Tokenizer::from_gguf(&gguf(meta))).contains("outside the vocabulary"));

    let mut meta = tiny_gpt2("default");
    meta[5].1 = strings(&["a zz"]);
    assert!(Tokenizer::from_gguf(&gguf(meta)).is_err());

    let mut meta = tiny_gpt2("default");
    meta[5].1 = strings(&["abc"]);
    assert!(err_text(Tokenizer::from_gguf(&gguf(meta))).contains("malformed GGUF merge"));

    let meta = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&["<unk>", "▁a"])),
    ];
    assert!(err_text(Tokenizer::from_gguf(&gguf(meta))).contains("neither merges nor scores"));

    let meta = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&["<unk>", "▁a"])),
        ("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0)])),
    ];
    assert!(err_text(Tokenizer::from_gguf(&gguf(meta))).contains("scores"));
}

#[test]
fn template_syntax_error() {
    let err =
        ChatTemplate::new("{% if messages %}{{ messages[0].content }", None, None).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<TemplateError>(),
            Some(TemplateError::Syntax(_))
        ),
        "{err:#}"
    );
    let err = ChatTemplate::new("{% for m in messages %}{% endif %}", None, None).unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<TemplateError>(),
            Some(TemplateError::Syntax(_))
        ),
        "{err:#}"
    );
}

#[test]
fn template_raise_exception() {
    let src = "{%- for m in messages %}{%- if m.role not in ['user', 'assistant'] %}{{- raise_exception('Only user and assistant roles are supported, got ' + m.role) }}{%- endif %}{{ m.content }}{%- endfor %}";
    let t = ChatTemplate::new(src, None, None).unwrap();
    let err = t
        .render(
            &json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]),
            None,
            false,
            None,
        )
        .unwrap_err();
    match err.downcast_ref::<TemplateError>() {
        Some(TemplateError::Raised(msg)) => {
            assert_eq!(msg, "Only user and assistant roles are supported, got tool")
        }
        other => panic!("expected Raised, got {other:?} ({err:#})"),
    }
    assert!(err
        .to_string()
        .contains("Only user and assistant roles are supported"));
    assert_eq!(
        t.render(
            &json!([{"role": "user", "content": "a"}]),
            None,
            false,
            None
        )
        .unwrap(),
        "a"
    );
}

#[test]
fn template_runtime_errors_are_errors() {
    // Undefined attribute chains and string + list, which jinja2 also refuses.
    let t = ChatTemplate::new("{{ messages[0].nope.deeper }}", None, None).unwrap();
    let err = t
        .render(&json!([{"role": "user"}]), None, false, None)
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<TemplateError>(),
            Some(TemplateError::Render(_))
        ),
        "{err:#}"
    );
}
