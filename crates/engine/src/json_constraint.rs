//! Constrained decoding for JSON output (`response_format` json_object / json_schema): an
//! incremental validator that accepts text one character at a time and refuses, as soon as it
//! happens, any character that cannot continue a JSON value matching the schema.
//!
//! Supported schema keywords: `type` (one or a list), `enum`, `const`, `properties`, `required`,
//! `additionalProperties: false`, `items`, `anyOf`/`oneOf` of simple types (as a type union).
//! Others (`pattern`, `minLength`, `format`, number ranges, …) are not enforced. Not here: choosing
//! tokens (SeqDecode asks `accepts` for candidate token texts).

use anyhow::{bail, Result};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A compiled schema node.
#[derive(Debug, Default)]
pub struct Schema {
    /// Allowed JSON types ("object", "array", "string", "number", "integer", "boolean", "null");
    /// empty = any.
    types: Vec<String>,
    /// Allowed values, serialized compactly (the output must spell one of them exactly).
    literals: Option<Vec<String>>,
    properties: Vec<(String, Arc<Schema>)>,
    required: Vec<String>,
    closed: bool,
    items: Option<Arc<Schema>>,
}

impl Schema {
    /// Any JSON value (json_object mode asks for an object).
    pub fn any_object() -> Arc<Schema> {
        Arc::new(Schema { types: vec!["object".into()], ..Default::default() })
    }

    pub fn compile(v: &Value) -> Result<Arc<Schema>> {
        Self::compile_at(v, 0)
    }

    fn compile_at(v: &Value, depth: usize) -> Result<Arc<Schema>> {
        if depth > 32 {
            bail!("json schema nests too deeply");
        }
        let Value::Object(o) = v else {
            return match v {
                Value::Bool(true) => Ok(Arc::new(Schema::default())),
                _ => bail!("a json schema must be an object"),
            };
        };
        let mut s = Schema::default();
        match o.get("type") {
            Some(Value::String(t)) => s.types.push(t.clone()),
            Some(Value::Array(ts)) => s.types.extend(ts.iter().filter_map(|t| t.as_str().map(String::from))),
            _ => {}
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(alts)) = o.get(key) {
                for a in alts {
                    match a.get("type") {
                        Some(Value::String(t)) => s.types.push(t.clone()),
                        _ => bail!("`{key}` is supported only as a union of simple types"),
                    }
                }
            }
        }
        if let Some(c) = o.get("const") {
            s.literals = Some(vec![c.to_string()]);
        }
        if let Some(Value::Array(e)) = o.get("enum") {
            s.literals = Some(e.iter().map(|x| x.to_string()).collect());
        }
        if let Some(Value::Object(props)) = o.get("properties") {
            for (k, p) in props {
                s.properties.push((k.clone(), Self::compile_at(p, depth + 1)?));
            }
            if s.types.is_empty() {
                s.types.push("object".into());
            }
        }
        if let Some(Value::Array(r)) = o.get("required") {
            s.required = r.iter().filter_map(|x| x.as_str().map(String::from)).collect();
        }
        s.closed = matches!(o.get("additionalProperties"), Some(Value::Bool(false)));
        if let Some(items) = o.get("items") {
            s.items = Some(Self::compile_at(items, depth + 1)?);
        }
        Ok(Arc::new(s))
    }

    fn allows(&self, t: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|x| x == t || (t == "number" && x == "integer"))
    }

    fn property(&self, key: &str) -> Option<&Arc<Schema>> {
        self.properties.iter().find(|(k, _)| k == key).map(|(_, s)| s)
    }
}

#[derive(Clone, Debug)]
enum Frame {
    /// A value is expected here.
    Value(Arc<Schema>),
    /// Spelling one of a fixed set of literal texts (enum/const/true/false/null).
    Literal { options: Arc<Vec<String>>, typed: String },
    Str { schema: Arc<Schema>, escape: u8, key: bool },
    Num { integer: bool, text: String },
    Object { schema: Arc<Schema>, state: ObjState, seen: Vec<String>, key: String },
    Array { schema: Arc<Schema>, state: ArrState },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ObjState {
    KeyOrEnd,
    Key,
    Colon,
    CommaOrEnd,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ArrState {
    ValueOrEnd,
    CommaOrEnd,
}

/// Validator state; cheap to clone so candidates can be tried without committing.
#[derive(Clone, Debug)]
pub struct JsonState {
    stack: Vec<Frame>,
    done: bool,
    /// Whitespace characters in a row outside strings.
    ws_run: usize,
}

/// Cap on whitespace between tokens: without it a model that wants a character the schema
/// forbids can pad with spaces forever instead of writing what is required.
const MAX_WS_RUN: usize = 10;

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

impl JsonState {
    pub fn new(schema: Arc<Schema>) -> Self {
        Self { stack: vec![Frame::Value(schema)], done: false, ws_run: 0 }
    }

    /// The value is complete: only whitespace may follow, and generation should end.
    pub fn is_complete(&self) -> bool {
        self.done
    }

    /// Would `text` be accepted? (Does not change the state.)
    pub fn accepts(&self, text: &str) -> bool {
        let mut s = self.clone();
        s.feed(text)
    }

    /// Feed text; false (and a spoiled state) if some character is not allowed.
    pub fn feed(&mut self, text: &str) -> bool {
        text.chars().all(|c| {
            let in_string = matches!(self.stack.last(), Some(Frame::Str { .. }));
            if is_ws(c) && !in_string {
                self.ws_run += 1;
                if self.ws_run > MAX_WS_RUN {
                    return false;
                }
            } else {
                self.ws_run = 0;
            }
            self.push(c)
        })
    }

    fn push(&mut self, c: char) -> bool {
        let Some(top) = self.stack.pop() else {
            return is_ws(c);
        };
        match top {
            Frame::Value(schema) => {
                if is_ws(c) {
                    self.stack.push(Frame::Value(schema));
                    return true;
                }
                self.start_value(schema, c)
            }
            Frame::Literal { options, mut typed } => {
                typed.push(c);
                let live: Vec<&String> = options.iter().filter(|o| o.starts_with(typed.as_str())).collect();
                if live.is_empty() {
                    // A finished literal followed by a delimiter belongs to the parent.
                    typed.pop();
                    if options.iter().any(|o| *o == typed) {
                        self.value_done();
                        return self.push(c);
                    }
                    return false;
                }
                if live.len() == 1 && *live[0] == typed {
                    self.value_done();
                } else {
                    self.stack.push(Frame::Literal { options, typed });
                }
                true
            }
            Frame::Str { schema, escape, key } => self.string_char(schema, escape, key, c),
            Frame::Num { integer, mut text } => {
                let ok_char = c.is_ascii_digit() || (!integer && matches!(c, '.' | 'e' | 'E' | '+' | '-'));
                if ok_char {
                    text.push(c);
                    if number_prefix_ok(&text) {
                        self.stack.push(Frame::Num { integer, text });
                        return true;
                    }
                    return false;
                }
                if !number_complete(&text) {
                    return false;
                }
                self.value_done();
                self.push(c)
            }
            Frame::Object { schema, state, seen, key } => self.object_char(schema, state, seen, key, c),
            Frame::Array { schema, state } => match (state, c) {
                (_, c) if is_ws(c) => {
                    self.stack.push(Frame::Array { schema, state });
                    true
                }
                (ArrState::ValueOrEnd, ']') | (ArrState::CommaOrEnd, ']') => {
                    self.value_done();
                    true
                }
                (ArrState::CommaOrEnd, ',') => {
                    let item = schema.items.clone().unwrap_or_default();
                    self.stack.push(Frame::Array { schema, state: ArrState::CommaOrEnd });
                    self.stack.push(Frame::Value(item));
                    // After a comma a value is mandatory: mark by pushing a Value frame whose
                    // completion returns to CommaOrEnd.
                    true
                }
                (ArrState::ValueOrEnd, c) => {
                    let item = schema.items.clone().unwrap_or_default();
                    self.stack.push(Frame::Array { schema, state: ArrState::CommaOrEnd });
                    self.start_value(item, c)
                }
                _ => false,
            },
        }
    }

    fn start_value(&mut self, schema: Arc<Schema>, c: char) -> bool {
        if let Some(lits) = &schema.literals {
            let options = Arc::new(lits.clone());
            self.stack.push(Frame::Literal { options, typed: String::new() });
            return self.push(c);
        }
        match c {
            '{' if schema.allows("object") => {
                self.stack.push(Frame::Object { schema, state: ObjState::KeyOrEnd, seen: vec![], key: String::new() });
                true
            }
            '[' if schema.allows("array") => {
                self.stack.push(Frame::Array { schema, state: ArrState::ValueOrEnd });
                true
            }
            '"' if schema.allows("string") => {
                self.stack.push(Frame::Str { schema, escape: 0, key: false });
                true
            }
            '-' | '0'..='9' if schema.allows("number") || schema.allows("integer") => {
                let integer = !schema.allows("number") || schema.types.iter().all(|t| t != "number");
                let integer = integer && schema.types.iter().any(|t| t == "integer");
                self.stack.push(Frame::Num { integer, text: c.to_string() });
                true
            }
            't' | 'f' | 'n' => {
                let mut options = vec![];
                if schema.allows("boolean") {
                    options.extend(["true".to_string(), "false".to_string()]);
                }
                if schema.allows("null") {
                    options.push("null".to_string());
                }
                if options.is_empty() {
                    return false;
                }
                self.stack.push(Frame::Literal { options: Arc::new(options), typed: String::new() });
                self.push(c)
            }
            _ => false,
        }
    }

    fn string_char(&mut self, schema: Arc<Schema>, escape: u8, key: bool, c: char) -> bool {
        // escape: 0 none, 1 after '\', 2..=5 reading \uXXXX digits.
        let next = match escape {
            0 if c == '"' => {
                if key {
                    return self.key_done();
                }
                self.value_done();
                return true;
            }
            0 if c == '\\' => 1,
            0 if (c as u32) < 0x20 => return false,
            0 => {
                if key && !self.key_char(c) {
                    return false;
                }
                0
            }
            1 if matches!(c, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => {
                if key && !self.key_char(unescape(c)) {
                    return false;
                }
                0
            }
            1 if c == 'u' => 2,
            2..=5 if c.is_ascii_hexdigit() => {
                if escape == 5 {
                    0
                } else {
                    escape + 1
                }
            }
            _ => return false,
        };
        self.stack.push(Frame::Str { schema, escape: next, key });
        true
    }

    /// A character of an object key: with a closed set of properties it must keep the key a
    /// prefix of an allowed, not yet used name.
    fn key_char(&mut self, c: char) -> bool {
        let Some(Frame::Object { schema, seen, key, .. }) = self.stack.last_mut() else { return false };
        key.push(c);
        if !schema.closed {
            return true;
        }
        let k = key.as_str();
        schema.properties.iter().any(|(name, _)| name.starts_with(k) && !seen.iter().any(|s| s == name))
    }

    fn key_done(&mut self) -> bool {
        let Some(Frame::Object { schema, state, seen, key }) = self.stack.last_mut() else { return false };
        if seen.contains(key) || (schema.closed && schema.property(key).is_none()) {
            return false;
        }
        *state = ObjState::Colon;
        true
    }

    fn object_char(&mut self, schema: Arc<Schema>, state: ObjState, mut seen: Vec<String>, key: String, c: char) -> bool {
        if is_ws(c) {
            self.stack.push(Frame::Object { schema, state, seen, key });
            return true;
        }
        match (state, c) {
            (ObjState::KeyOrEnd, '}') | (ObjState::CommaOrEnd, '}') => {
                if schema.required.iter().any(|r| !seen.contains(r)) {
                    return false;
                }
                self.value_done();
                true
            }
            (ObjState::KeyOrEnd, '"') | (ObjState::Key, '"') => {
                // No more keys possible in a closed object whose names are all used.
                if schema.closed && schema.properties.iter().all(|(n, _)| seen.contains(n)) {
                    return false;
                }
                self.stack.push(Frame::Object { schema: schema.clone(), state: ObjState::Key, seen, key: String::new() });
                self.stack.push(Frame::Str { schema, escape: 0, key: true });
                true
            }
            (ObjState::Colon, ':') => {
                let child = schema.property(&key).cloned().unwrap_or_default();
                seen.push(key);
                self.stack.push(Frame::Object { schema, state: ObjState::CommaOrEnd, seen, key: String::new() });
                self.stack.push(Frame::Value(child));
                true
            }
            (ObjState::CommaOrEnd, ',') => {
                if schema.closed && schema.properties.iter().all(|(n, _)| seen.contains(n)) {
                    return false;
                }
                self.stack.push(Frame::Object { schema, state: ObjState::Key, seen, key });
                true
            }
            _ => false,
        }
    }

    /// The frame on top finished a value; mark completion at the top level.
    fn value_done(&mut self) {
        if self.stack.is_empty() {
            self.done = true;
        }
    }
}

fn unescape(c: char) -> char {
    match c {
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        other => other,
    }
}

/// Could `t` still grow into a valid JSON number?
fn number_prefix_ok(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    if i == b.len() {
        return true;
    }
    if b[i] == b'0' {
        i += 1;
        if i < b.len() && b[i].is_ascii_digit() {
            return false;
        }
    } else if b[i].is_ascii_digit() {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    } else {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i < b.len() && i == s {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    i == b.len()
}

fn number_complete(t: &str) -> bool {
    number_prefix_ok(t) && t.ends_with(|c: char| c.is_ascii_digit()) && serde_json::from_str::<f64>(t).is_ok()
}

/// Parse an OpenAI `response_format` into a schema: None for plain text.
pub fn from_response_format(rf: &Value) -> Result<Option<Arc<Schema>>> {
    let empty = Map::new();
    let o = rf.as_object().unwrap_or(&empty);
    match o.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Schema::any_object())),
        Some("json_schema") => {
            let schema = o
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| anyhow::anyhow!("response_format json_schema needs json_schema.schema"))?;
            Ok(Some(Schema::compile(schema)?))
        }
        Some(other) => bail!("unknown response_format type '{other}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(schema: &Arc<Schema>, text: &str) -> bool {
        let mut s = JsonState::new(schema.clone());
        s.feed(text) && s.is_complete()
    }

    fn prefix_ok(schema: &Arc<Schema>, text: &str) -> bool {
        JsonState::new(schema.clone()).accepts(text)
    }

    #[test]
    fn any_object_accepts_json_and_refuses_the_rest() {
        let s = Schema::any_object();
        for good in [r#"{}"#, r#"{"a": 1, "b": [true, null, -2.5e3, "x\"\u00e9"], "c": {"d": {}}}"#, " { \"k\" : \"v\" } "] {
            assert!(ok(&s, good), "{good}");
        }
        for bad in ["[1]", "hello", r#"{"a" 1}"#, r#"{"a": 01}"#, r#"{"a": tru }"#, r#"{a: 1}"#, r#"{"a": 1,}"#] {
            assert!(!ok(&s, bad), "{bad} accepted");
        }
        assert!(prefix_ok(&s, r#"{"a": [1, 2"#));
        assert!(!prefix_ok(&s, r#"{"a": [1, 2}"#));
    }

    #[test]
    fn schema_fixes_keys_types_enums_and_required() {
        let s = Schema::compile(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "color": {"enum": ["red", "green"]},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["name", "age"],
            "additionalProperties": false
        }))
        .unwrap();
        assert!(ok(&s, r#"{"name": "Ann", "age": 31, "color": "green", "tags": ["a", "b"]}"#));
        assert!(ok(&s, r#"{"age": 3, "name": ""}"#));
        assert!(!ok(&s, r#"{"name": "Ann"}"#), "missing required");
        assert!(!prefix_ok(&s, r#"{"nick"#), "unknown key");
        assert!(!prefix_ok(&s, r#"{"age": 3.5"#), "integer");
        assert!(!prefix_ok(&s, r#"{"age": "3"#), "type");
        assert!(!prefix_ok(&s, r#"{"color": "blue"#), "enum");
        assert!(!prefix_ok(&s, r#"{"tags": [1"#), "items");
        assert!(!prefix_ok(&s, r#"{"name": "a", "name""#), "repeated key");
        assert!(!prefix_ok(&s, &format!("{{{}", " ".repeat(40))), "endless padding");
        assert!(prefix_ok(&s, &format!("{{\"name\": \"{}", " ".repeat(40))), "spaces inside strings are content");
    }

    #[test]
    fn response_format_parsing() {
        assert!(from_response_format(&json!({"type": "text"})).unwrap().is_none());
        assert!(from_response_format(&json!({"type": "json_object"})).unwrap().is_some());
        assert!(from_response_format(&json!({"type": "json_schema"})).is_err());
        assert!(from_response_format(&json!({"type": "yaml"})).is_err());
    }
}
