//! Reads the JSON inside one `<tool_call>…</tool_call>` block:
//! `{"name": "...", "arguments": {...}}`, where `arguments` may also be a string holding that object
//! (models trained on OpenAI-style data write it so), may be called `parameters` (Llama 3 style), and
//! may be left out for a call without arguments. Anything else is `ToolCallItem::Invalid`.

use serde_json::{Map, Value};

use super::ToolCallItem;

pub(crate) fn parse(body: &str) -> ToolCallItem {
    match read(body.trim()) {
        Ok((name, arguments)) => ToolCallItem::Call { name, arguments },
        Err(error) => ToolCallItem::Invalid {
            raw: body.to_string(),
            error,
        },
    }
}

/// A block the output ended inside. Small models often stop (EOS) right after a complete JSON
/// call instead of writing `</tool_call>`; such a call is taken. A cut-off one is Invalid.
pub(crate) fn unclosed(body: &str) -> ToolCallItem {
    match read(body.trim()) {
        Ok((name, arguments)) => ToolCallItem::Call { name, arguments },
        Err(_) => ToolCallItem::Invalid {
            raw: body.to_string(),
            error: "unclosed <tool_call> (no </tool_call> before the end)".to_string(),
        },
    }
}

fn read(json: &str) -> Result<(String, Value), String> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| format!("tool call is not valid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("tool call must be a JSON object".to_string());
    };
    let name = match obj.remove("name") {
        Some(Value::String(n)) if !n.is_empty() => n,
        Some(_) => return Err("tool call \"name\" must be a non-empty string".to_string()),
        None => return Err("tool call has no \"name\"".to_string()),
    };
    let arguments = match obj.remove("arguments").or_else(|| obj.remove("parameters")) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(args)) => Value::Object(args),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(args)) => Value::Object(args),
            Ok(_) => {
                return Err("tool call \"arguments\" string does not hold a JSON object".to_string())
            }
            Err(e) => {
                return Err(format!(
                    "tool call \"arguments\" string is not valid JSON: {e}"
                ))
            }
        },
        Some(_) => return Err("tool call \"arguments\" must be a JSON object".to_string()),
    };
    Ok((name, arguments))
}
