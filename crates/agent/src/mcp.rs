//! The agent's tools served over the Model Context Protocol (stdio transport: JSON-RPC 2.0, one
//! message per line), so other agent clients can search a private index: `initialize`, `ping`,
//! `tools/list`, `tools/call`, and the `notifications/*` a client sends. Protocol errors are JSON-RPC
//! errors (-32700 parse, -32600 invalid request, -32601 unknown method, -32602 bad params); a tool
//! that fails answers a result with `isError: true`, as the protocol asks. Bad input never ends the
//! server; only the end of its input does.
//!
//! Not here: the HTTP transport, resources, prompts, sampling.

use crate::tools::{render, ToolResult, Toolbox};
use anyhow::Result;
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::sync::Arc;

const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

/// Serve until `input` ends.
pub fn serve(tools: Arc<Toolbox>, input: impl BufRead, mut output: impl Write) -> Result<()> {
    for line in input.split(b'\n') {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        if let Some(resp) = handle(&tools, &text) {
            serde_json::to_writer(&mut output, &resp)?;
            output.write_all(b"\n")?;
            output.flush()?;
        }
    }
    Ok(())
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// One incoming line → the response, or None for a notification.
pub fn handle(tools: &Arc<Toolbox>, line: &str) -> Option<Value> {
    let msg: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Some(error(Value::Null, -32700, format!("Parse error: {e}"))),
    };
    let Some(obj) = msg.as_object() else {
        let what = if msg.is_array() { "batches are not supported" } else { "a request must be a JSON object" };
        return Some(error(Value::Null, -32600, format!("Invalid Request: {what}")));
    };
    let id = obj.get("id").cloned();
    let id_ok = matches!(id, None | Some(Value::String(_)) | Some(Value::Number(_)));
    let method = obj.get("method").and_then(Value::as_str);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !id_ok || method.is_none() {
        // A response from the client (we send no requests) or garbage: answer only if it has an id.
        if method.is_none() && (obj.contains_key("result") || obj.contains_key("error")) {
            return None;
        }
        return Some(error(
            id.filter(|_| id_ok).unwrap_or(Value::Null),
            -32600,
            "Invalid Request: needs \"jsonrpc\": \"2.0\", a method, and a string or number id",
        ));
    }
    let method = method.unwrap();
    let Some(id) = id else {
        // Notifications (initialized, cancelled, …) need no answer.
        return None;
    };
    let params = obj.get("params").cloned().unwrap_or(json!({}));
    let result = match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or("");
            let version = PROTOCOL_VERSIONS.iter().find(|v| **v == asked).unwrap_or(&PROTOCOL_VERSIONS[0]);
            Ok(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "nanbeige", "version": env!("CARGO_PKG_VERSION")},
                "instructions": "search finds documents (each with an id); visit reads one by id, keeping the parts relevant to a goal.",
            }))
        }
        "ping" => Ok(json!({})),
        "tools/list" => {
            let list: Vec<Value> = tools
                .schemas()
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let f = &t["function"];
                    json!({"name": f["name"], "description": f["description"], "inputSchema": f["parameters"]})
                })
                .collect();
            Ok(json!({"tools": list}))
        }
        "tools/call" => call(tools, &params),
        _ => Err((-32601, format!("Method not found: {method}"))),
    };
    Some(match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err((code, m)) => error(id, code, m),
    })
}

fn call(tools: &Arc<Toolbox>, params: &Value) -> Result<Value, (i64, String)> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((-32602, "Invalid params: tools/call needs a tool name".into()));
    };
    if !tools.names().contains(&name) {
        return Err((-32602, format!("Unknown tool: {name}")));
    }
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    if !args.is_object() {
        return Err((-32602, "Invalid params: arguments must be an object".into()));
    }
    Ok(match tools.execute_with_timeout(name, &args) {
        Ok(r) => {
            let text = render(&r, &tools.budgets, None).text;
            let mut out = json!({"content": [{"type": "text", "text": text}], "isError": false});
            match &r {
                ToolResult::Search { hits, .. } => out["structuredContent"] = json!({"results": hits}),
                ToolResult::Python(o) => {
                    out["structuredContent"] = serde_json::to_value(o).unwrap_or(Value::Null);
                    out["isError"] = json!(!o.success());
                }
                ToolResult::Visit { .. } => {}
            }
            out
        }
        Err(e) => json!({"content": [{"type": "text", "text": format!("error: {e:#}")}], "isError": true}),
    })
}
