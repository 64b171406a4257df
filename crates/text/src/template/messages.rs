//! The clean-up transformers applies to a conversation before its template sees it
//! (`_normalize_chat_messages` and `_alias_reasoning_fields` in chat_template_utils.py):
//! keys whose value is null are dropped (so `content: null` reads as absent, not as "None"), and a
//! message's reasoning is offered under both `reasoning_content` and `thinking` whichever of
//! `reasoning_content`, `thinking` or `reasoning` the caller used.

use anyhow::{bail, Result};
use serde_json::{Map, Value};

const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

pub(crate) fn normalize(messages: &Value) -> Result<Vec<Value>> {
    let Value::Array(list) = messages else {
        bail!("chat messages must be a JSON array of message objects");
    };
    if list.is_empty() {
        bail!("cannot apply a chat template to an empty conversation");
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(fields) = m else {
                bail!("chat message {i} is not an object: {m}");
            };
            let fields: Map<String, Value> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(Value::Object(alias_reasoning(fields)))
        })
        .collect()
}

/// `{"thinking": r, **message, "reasoning_content": r}` in Python's key order.
fn alias_reasoning(message: Map<String, Value>) -> Map<String, Value> {
    let Some(reasoning) = REASONING_FIELDS
        .iter()
        .find_map(|k| message.get(*k))
        .cloned()
    else {
        return message;
    };
    let mut out = Map::new();
    out.insert("thinking".to_string(), reasoning.clone());
    for (k, v) in message {
        out.insert(k, v);
    }
    out.insert("reasoning_content".to_string(), reasoning);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn drops_nulls_and_aliases_reasoning() {
        let got = super::normalize(&json!([{"role": "assistant", "content": null, "reasoning": "r", "tool_calls": [{"x": null}]}])).unwrap();
        let keys: Vec<&String> = got[0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "thinking",
                "role",
                "reasoning",
                "tool_calls",
                "reasoning_content"
            ]
        );
        assert_eq!(
            got[0]["tool_calls"],
            json!([{"x": null}]),
            "only top-level nulls go"
        );
        assert_eq!(got[0]["thinking"], "r");
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(super::normalize(&json!({})).is_err());
        assert!(super::normalize(&json!([])).is_err());
        assert!(super::normalize(&json!(["hi"])).is_err());
    }
}
