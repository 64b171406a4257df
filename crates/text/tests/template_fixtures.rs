//! Chat templates must render byte-identically to transformers' apply_chat_template for every
//! conversation in tests/fixtures/templates/<name>.json, and fail where transformers fails.

mod common;

use common::*;
use nanbeige_text::ChatTemplate;
use serde_json::Value;

fn check(name: &str) {
    let dir = fixtures().join("templates");
    let source = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
    let cases = read_json(&dir.join(format!("{name}.json")));
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 8, "{name}: too few cases");
    let mut failures = Vec::new();
    for case in cases {
        let case_name = case["name"].as_str().unwrap();
        let template = ChatTemplate::new(
            &source,
            case["bos_token"].as_str(),
            case["eos_token"].as_str(),
        )
        .unwrap();
        let tools = Some(&case["tools"]).filter(|t| !t.is_null());
        let extra = Some(&case["extra"]).filter(|t| !t.is_null());
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render(&case["messages"], tools, agp, extra);
        match (&case["rendered"], got) {
            (Value::String(want), Ok(got)) if *want == got => {}
            (Value::String(want), Ok(got)) => failures.push(format!(
                "{case_name}: rendering differs\n--- want\n{want}\n--- got\n{got}\n---"
            )),
            (Value::String(_), Err(e)) => failures.push(format!("{case_name}: failed: {e:#}")),
            (Value::Null, Ok(got)) => failures.push(format!(
                "{case_name}: transformers fails ({}) but we rendered:\n{got}",
                case["error"].as_str().unwrap_or("")
            )),
            (Value::Null, Err(_)) => {}
            (other, _) => panic!("bad fixture {case_name}: {other}"),
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} failures\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nanbeige() {
    check("nanbeige");
}

#[test]
fn smollm2() {
    check("smollm2");
}

#[test]
fn qwen2() {
    check("qwen2");
}

/// Small templates exercising the jinja2 features chat templates rely on (tojson options, Python
/// printing, string methods, filters, loop controls, whitespace control, macros, raise_exception).
#[test]
fn jinja_features() {
    let cases = read_json(&fixtures().join("templates/features.json"));
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let template = ChatTemplate::new(
            case["template"].as_str().unwrap(),
            case["bos_token"].as_str(),
            case["eos_token"].as_str(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let got = template.render(
            &case["messages"],
            Some(&case["tools"]),
            true,
            Some(&case["extra"]),
        );
        match (&case["rendered"], got) {
            (Value::String(want), Ok(got)) if *want == got => {}
            (Value::Null, Err(_)) => {}
            (want, got) => {
                failures.push(format!("{name}:\n--- want\n{want}\n--- got\n{got:?}\n---"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures\n{}",
        failures.len(),
        failures.join("\n")
    );
}
