//! `ChatTemplate`: renders a model's Jinja chat template exactly as transformers'
//! `apply_chat_template(..., tokenize=False)` does, using minijinja set up like transformers' jinja2
//! environment (trim_blocks, lstrip_blocks, loop controls, Python string/dict methods, a `tojson`
//! that writes Python's json.dumps, `raise_exception`, `strftime_now`, Python's printing of values).
//!
//! It does not tokenize the result and does not decide what the generation prompt is beyond the
//! template's own `add_generation_prompt` handling.

mod globals;
mod messages;
mod pyfmt;

use anyhow::{anyhow, bail, Result};
use minijinja::{AutoEscape, Environment, Error as JinjaError};
use serde_json::{Map, Value as Json};

/// Why rendering failed, for callers that answer differently to a refused conversation (a client
/// error) and a template that cannot render at all.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
}

const NAME: &str = "chat_template";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles the template; a syntax error is an `Err` (downcastable to `TemplateError::Syntax`).
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, _state, value| {
            let mut text = String::new();
            pyfmt::py_str(&mut text, value);
            out.write_str(&text).map_err(JinjaError::from)
        });
        env.add_filter("tojson", pyfmt::tojson_filter);
        env.add_filter("string", |v: minijinja::Value| {
            let mut text = String::new();
            pyfmt::py_str(&mut text, &v);
            text
        });
        // jinja2's `attr` reads Python attributes, which a dict's keys are not.
        env.add_filter(
            "attr",
            |v: minijinja::Value, name: &str| -> Result<minijinja::Value, JinjaError> {
                match v.kind() {
                    minijinja::value::ValueKind::Map if !pyfmt::is_namespace(&v) => {
                        Ok(minijinja::Value::UNDEFINED)
                    }
                    _ => v.get_attr(name),
                }
            },
        );
        env.add_function("raise_exception", globals::raise_exception);
        env.add_function("strftime_now", globals::strftime_now);
        env.add_template_owned(NAME, without_generation_tags(source))
            .map_err(|e| anyhow!(TemplateError::Syntax(describe(&e))))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.map(str::to_string),
            eos_token: eos_token.map(str::to_string),
        })
    }

    /// Renders `messages` (a JSON array of OpenAI-style messages). `tools` is the list of tool schemas,
    /// `extra` an object of additional template variables (e.g. `{"enable_thinking": false}`).
    pub fn render(
        &self,
        messages: &Json,
        tools: Option<&Json>,
        add_generation_prompt: bool,
        extra: Option<&Json>,
    ) -> Result<String> {
        let messages = messages::normalize(messages)?;
        if let Some(t) = tools {
            match t {
                Json::Array(list) if list.iter().all(Json::is_object) => {}
                Json::Null => {}
                _ => bail!("tools must be a JSON array of tool schema objects"),
            }
        }

        // transformers: {**special_tokens_map, **kwargs}, then the named arguments.
        let mut ctx = Map::new();
        if let Some(b) = &self.bos_token {
            ctx.insert("bos_token".into(), Json::String(b.clone()));
        }
        if let Some(e) = &self.eos_token {
            ctx.insert("eos_token".into(), Json::String(e.clone()));
        }
        match extra {
            None | Some(Json::Null) => {}
            Some(Json::Object(vars)) => {
                for (k, v) in vars {
                    if ["messages", "tools", "documents", "add_generation_prompt"]
                        .contains(&k.as_str())
                    {
                        bail!("extra template variable '{k}' collides with a standard one");
                    }
                    ctx.insert(k.clone(), v.clone());
                }
            }
            Some(_) => bail!("extra template variables must be a JSON object"),
        }
        ctx.insert("messages".into(), Json::Array(messages));
        ctx.insert("tools".into(), tools.cloned().unwrap_or(Json::Null));
        ctx.insert("documents".into(), Json::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );

        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| anyhow!(TemplateError::Render(describe(&e))))?;
        template
            .render(minijinja::Value::from_serialize(&ctx))
            .map_err(|e| anyhow!(classify(&e)))
    }
}

fn classify(e: &JinjaError) -> TemplateError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<globals::Raised>() {
            return TemplateError::Raised(raised.0.clone());
        }
        source = s.source();
    }
    TemplateError::Render(describe(e))
}

/// minijinja's message plus where it happened.
fn describe(e: &JinjaError) -> String {
    match e.line() {
        Some(line) => format!("{e} (line {line})"),
        None => e.to_string(),
    }
}

/// transformers' `{% generation %}…{% endgeneration %}` only marks assistant text for training masks and
/// renders its body unchanged; minijinja has no such tag, so it becomes an always-true `if`, keeping
/// the tags' whitespace control.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let body = inner
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+']);
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let lead = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
                let trail = &inner[inner.trim_end_matches(['-', '+']).len()..];
                out.push_str(&format!("{{%{lead} {r} {trail}%}}"));
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, messages: Json) -> Result<String> {
        ChatTemplate::new(src, Some("<s>"), Some("</s>"))?.render(&messages, None, false, None)
    }

    #[test]
    fn syntax_error_is_err() {
        let err = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<TemplateError>(),
                Some(TemplateError::Syntax(_))
            ),
            "{err}"
        );
    }

    #[test]
    fn raise_exception_carries_its_message() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user turn') }}{% endif %}ok";
        let err = render(src, json!([{"role": "system", "content": "x"}])).unwrap_err();
        match err.downcast_ref::<TemplateError>() {
            Some(TemplateError::Raised(m)) => {
                assert_eq!(m, "Conversation must start with a user turn")
            }
            other => panic!("expected Raised, got {other:?}"),
        }
        assert_eq!(
            render(src, json!([{"role": "user", "content": "x"}])).unwrap(),
            "ok"
        );
    }

    #[test]
    fn python_printing_and_tojson() {
        let src = "{{ messages[0].content }}|{{ messages[0].n }}|{{ messages[0].b }}|{{ messages[0].content | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ messages[0].content | tojson(true) }}";
        let out = render(
            src,
            json!([{"content": ["a<&>'", {"k": 1.0}], "n": null, "b": true}]),
        )
        .unwrap();
        assert_eq!(
            out,
            "[\"a<&>'\", {'k': 1.0}]||True|[\"a<&>'\", {\"k\": 1.0}]|{\n  \"content\": [\n    \"a<&>'\",\n    {\n      \"k\": 1.0\n    }\n  ],\n  \"b\": true\n}|[\"a<&>'\", {\"k\": 1.0}]"
        );
    }

    #[test]
    fn generation_tags_render_their_body() {
        let src = "{%- for m in messages %}{% generation -%}\n {{ m.content }}{%- endgeneration %}{% endfor %}";
        assert_eq!(
            render(src, json!([{"content": "a"}, {"content": "b"}])).unwrap(),
            "ab"
        );
    }

    #[test]
    fn python_methods_and_slicing() {
        let src = "{% for m in messages[::-1] %}{{ m.content.split('</think>')[-1].strip('\\n') }}{% if m.content.startswith('x') %}!{% endif %}{% endfor %}";
        assert_eq!(
            render(
                src,
                json!([{"content": "<think>a</think>\nb\n"}, {"content": "xy"}])
            )
            .unwrap(),
            "xy!b"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let t = ChatTemplate::new("{{ messages }}", None, None).unwrap();
        assert!(t.render(&json!("hi"), None, false, None).is_err());
        assert!(t
            .render(
                &json!([{"role": "user", "content": "x"}]),
                Some(&json!("tools")),
                false,
                None
            )
            .is_err());
        assert!(t
            .render(
                &json!([{"role": "user", "content": "x"}]),
                None,
                false,
                Some(&json!([1]))
            )
            .is_err());
        assert!(t
            .render(
                &json!([{"role": "user", "content": "x"}]),
                None,
                false,
                Some(&json!({"messages": 1}))
            )
            .is_err());
    }
}
