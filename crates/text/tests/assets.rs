//! Where `TextAssets` finds things in a model directory: chat_template.jinja beats the config's
//! template, list-form templates, EOS ids from generation_config.json.

mod common;

use common::*;
use nanbeige_text::TextAssets;
use serde_json::json;

fn spm_dir_with(tag: &str, config: serde_json::Value) -> std::path::PathBuf {
    let dir = temp_dir(tag);
    std::fs::copy(
        fixtures().join("spm/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn chat_template_file_wins() {
    let dir = spm_dir_with(
        "jinja",
        json!({"chat_template": "from config", "eos_token": "<|im_end|>"}),
    );
    assert_eq!(
        TextAssets::from_hf_dir(&dir)
            .unwrap()
            .chat_template
            .as_deref(),
        Some("from config")
    );
    std::fs::write(dir.join("chat_template.jinja"), "from file").unwrap();
    assert_eq!(
        TextAssets::from_hf_dir(&dir)
            .unwrap()
            .chat_template
            .as_deref(),
        Some("from file")
    );
}

#[test]
fn template_list_takes_default() {
    let dir = spm_dir_with(
        "list",
        json!({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}),
    );
    assert_eq!(
        TextAssets::from_hf_dir(&dir)
            .unwrap()
            .chat_template
            .as_deref(),
        Some("D")
    );
}

#[test]
fn eos_ids_from_config_and_generation_config() {
    let dir = spm_dir_with(
        "eos",
        json!({"eos_token": {"content": "<|im_end|>", "special": true}, "bos_token": null}),
    );
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [1202, 1201]}"#,
    )
    .unwrap();
    let assets = TextAssets::from_hf_dir(&dir).unwrap();
    assert_eq!(assets.eos_token.as_deref(), Some("<|im_end|>"));
    assert_eq!(assets.bos_token, None);
    assert_eq!(assets.eos_ids, vec![1201, 1202]);
}

#[test]
fn no_config_at_all() {
    let dir = temp_dir("bare");
    std::fs::copy(
        fixtures().join("spm/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let assets = TextAssets::from_hf_dir(&dir).unwrap();
    assert_eq!(
        (assets.chat_template, assets.bos_token, assets.eos_ids.len()),
        (None, None, 0)
    );
    assert!(assets.add_bos, "tokenizer.json's post-processor adds <s>");
}
