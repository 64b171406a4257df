//! The agent's tools: `search(query)`, `visit(id_or_url, goal)` and `python(code)`, their JSON
//! schemas in the OpenAI function format (chat templates render these natively), running a call
//! with a time limit, and rendering results as token-budgeted text with citation numbers.
//!
//! Where documents come from is a `Corpus`: a private index (local.rs) or a web search backend
//! plus page fetching (web.rs). Not here: the agent loop, context management (agent.rs,
//! context.rs).

use crate::sandbox::{self, Limits, Outcome};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One search result: `id` is what `visit` takes (a document id or a URL).
#[derive(Clone, Debug, Serialize)]
pub struct SearchHit {
    pub id: String,
    pub title: String,
    pub snippet: String,
    /// Where it lives: a file path or a URL.
    pub source: String,
}

/// A whole document as clean text.
#[derive(Clone, Debug, Serialize)]
pub struct Page {
    pub id: String,
    pub title: String,
    pub source: String,
    pub text: String,
}

/// Somewhere to search and read: a private index or the web.
pub trait Corpus: Send + Sync {
    fn describe(&self) -> String;
    fn search(&self, query: &str, k: usize) -> Result<Vec<SearchHit>>;
    fn open(&self, id_or_url: &str) -> Result<Page>;
}

/// How much of each result goes back to the model.
#[derive(Clone, Debug)]
pub struct Budgets {
    /// Results per search.
    pub search_k: usize,
    /// Characters of each search snippet.
    pub snippet_chars: usize,
    /// Tokens of a visited page (the sections that best match the goal).
    pub visit_tokens: usize,
    /// Time one tool call may take before the model is told it timed out.
    pub tool_timeout: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Self { search_k: 5, snippet_chars: 240, visit_tokens: 1200, tool_timeout: Duration::from_secs(60) }
    }
}

/// Rough token count for budgets of tool text (about 3.5 bytes per token for English/code with
/// BPE vocabularies; the prompt itself is counted exactly by the brain).
pub fn approx_tokens(s: &str) -> usize {
    (s.len() * 2).div_ceil(7)
}

/// A finished call, before rendering (rendering assigns citation numbers).
#[derive(Clone, Debug)]
pub enum ToolResult {
    Search { query: String, hits: Vec<SearchHit> },
    Visit { page: Page, goal: String, excerpt: String, shown_sections: usize, total_sections: usize },
    Python(Outcome),
}

/// Citation numbers for every source a search or visit showed the model, in first-seen order.
#[derive(Default, Debug, Clone)]
pub struct Sources {
    pub list: Vec<Source>,
    by_id: HashMap<String, usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Source {
    pub n: usize,
    pub id: String,
    pub title: String,
    pub source: String,
    pub visited: bool,
}

impl Sources {
    pub fn number(&mut self, id: &str, title: &str, source: &str, visited: bool) -> usize {
        if let Some(&i) = self.by_id.get(id) {
            self.list[i].visited |= visited;
            return self.list[i].n;
        }
        let n = self.list.len() + 1;
        self.by_id.insert(id.to_string(), self.list.len());
        self.list.push(Source { n, id: id.to_string(), title: title.to_string(), source: source.to_string(), visited });
        n
    }

    pub fn get(&self, n: usize) -> Option<&Source> {
        self.list.get(n.wrapping_sub(1))
    }
}

pub struct Toolbox {
    pub corpus: Option<Arc<dyn Corpus>>,
    /// None: no python tool.
    pub python: Option<Limits>,
    pub budgets: Budgets,
}

impl Toolbox {
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = vec![];
        if self.corpus.is_some() {
            v.extend(["search", "visit"]);
        }
        if self.python.is_some() {
            v.push("python");
        }
        v
    }

    /// Tool definitions in the OpenAI function format.
    pub fn schemas(&self) -> Value {
        let mut tools = vec![];
        if let Some(c) = &self.corpus {
            tools.push(json!({"type": "function", "function": {
                "name": "search",
                "description": format!("Search {}. Returns the best matching documents, each with a citation number [n], an id to pass to visit, a title and a snippet.", c.describe()),
                "parameters": {"type": "object", "properties": {
                    "query": {"type": "string", "description": "What to look for: a few specific keywords."}
                }, "required": ["query"]}
            }}));
            tools.push(json!({"type": "function", "function": {
                "name": "visit",
                "description": "Read a document found by search: returns the parts of its text most relevant to the goal.",
                "parameters": {"type": "object", "properties": {
                    "id": {"type": "string", "description": "The id (or URL) of a search result."},
                    "goal": {"type": "string", "description": "What information you want from this document."}
                }, "required": ["id", "goal"]}
            }}));
        }
        if self.python.is_some() {
            tools.push(json!({"type": "function", "function": {
                "name": "python",
                "description": "Run a Python 3 script in a sandbox without network access and return its stdout and stderr. Use print() to see values.",
                "parameters": {"type": "object", "properties": {
                    "code": {"type": "string", "description": "The complete Python script."}
                }, "required": ["code"]}
            }}));
        }
        Value::Array(tools)
    }

    /// Run one call. Errors (bad arguments, unknown tool, backend failures) are returned for the
    /// caller to hand back to the model.
    pub fn execute(&self, name: &str, args: &Value) -> Result<ToolResult> {
        let arg = |k: &str| -> Result<String> {
            match args.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(Value::String(_)) => bail!("argument '{k}' is empty"),
                Some(v) if !v.is_null() => Ok(v.to_string()),
                _ => bail!("missing argument '{k}'"),
            }
        };
        if !args.is_object() {
            bail!("arguments must be a JSON object, got {args}");
        }
        match name {
            "search" if self.corpus.is_some() => {
                let query = arg("query")?;
                let hits = self.corpus.as_ref().unwrap().search(&query, self.budgets.search_k)?;
                Ok(ToolResult::Search { query, hits })
            }
            "visit" if self.corpus.is_some() => {
                // Small models often say "url" or "id_or_url"; accept those.
                let id = arg("id").or_else(|_| arg("id_or_url")).or_else(|_| arg("url"))?;
                let goal = arg("goal").unwrap_or_default();
                let page = self.corpus.as_ref().unwrap().open(id.trim())?;
                let (excerpt, shown_sections, total_sections) =
                    excerpt_for_goal(&page.text, &goal, self.budgets.visit_tokens);
                Ok(ToolResult::Visit { page, goal, excerpt, shown_sections, total_sections })
            }
            "python" if self.python.is_some() => {
                let code = arg("code")?;
                Ok(ToolResult::Python(sandbox::run_python(&code, self.python.as_ref().unwrap())?))
            }
            _ => bail!("unknown tool '{name}'; available tools: {}", self.names().join(", ")),
        }
    }

    /// `execute` on a worker thread, giving up after the tool timeout (the thread is abandoned; the
    /// python tool's own wall-clock limit is shorter and kills its process).
    pub fn execute_with_timeout(self: &Arc<Self>, name: &str, args: &Value) -> Result<ToolResult> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (me, name_s, args) = (self.clone(), name.to_string(), args.clone());
        std::thread::spawn(move || {
            let _ = tx.send(me.execute(&name_s, &args));
        });
        let limit = self.budgets.tool_timeout;
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| Err(anyhow!("tool '{name}' timed out after {:.0} s", limit.as_secs_f64())))
    }
}

/// What the model reads for a result, and a short form for when older results are condensed.
pub struct Rendered {
    pub text: String,
    pub condensed: String,
    /// Citation numbers shown.
    pub cited: Vec<usize>,
}

pub fn render(result: &ToolResult, budgets: &Budgets, mut sources: Option<&mut Sources>) -> Rendered {
    let mut number = |id: &str, title: &str, source: &str, visited: bool| -> Option<usize> {
        sources.as_deref_mut().map(|s| s.number(id, title, source, visited))
    };
    let tag = |n: Option<usize>| n.map(|n| format!("[{n}] ")).unwrap_or_default();
    match result {
        ToolResult::Search { query, hits } => {
            if hits.is_empty() {
                let t = format!("No results for \"{query}\". Try other keywords.");
                return Rendered { condensed: t.clone(), text: t, cited: vec![] };
            }
            let (mut text, mut condensed, mut cited) = (String::new(), format!("search \"{query}\" found: "), vec![]);
            for h in hits {
                let n = number(&h.id, &h.title, &h.source, false);
                cited.extend(n);
                let snippet =
                    cut_chars(&h.snippet.split_whitespace().collect::<Vec<_>>().join(" "), budgets.snippet_chars);
                text.push_str(&format!("{}{}\nid: {}\n{}\n\n", tag(n), h.title, h.id, snippet));
                condensed.push_str(&format!("{}{} (id: {}); ", tag(n), h.title, h.id));
            }
            Rendered {
                text: text.trim_end().to_string(),
                condensed: condensed.trim_end_matches("; ").to_string(),
                cited,
            }
        }
        ToolResult::Visit { page, goal, excerpt, shown_sections, total_sections } => {
            let n = number(&page.id, &page.title, &page.source, true);
            let head = format!("{}{}\nid: {}\nsource: {}\n", tag(n), page.title, page.id, page.source);
            let note = if shown_sections < total_sections {
                format!("(showing {shown_sections} of {total_sections} sections, those most relevant to the goal)\n")
            } else {
                String::new()
            };
            let text = format!("{head}{note}\n{excerpt}");
            let short = cut_chars(&excerpt.split_whitespace().collect::<Vec<_>>().join(" "), 300);
            let condensed = format!("{}visited {} for \"{goal}\": {short}", tag(n), page.title);
            Rendered { text, condensed, cited: n.into_iter().collect() }
        }
        ToolResult::Python(o) => {
            let mut text = String::new();
            if !o.stdout.is_empty() {
                text.push_str(&format!("stdout:\n{}\n", o.stdout.trim_end()));
            }
            if !o.stderr.is_empty() {
                text.push_str(&format!("stderr:\n{}\n", o.stderr.trim_end()));
            }
            match (&o.killed_reason, o.exit_code) {
                (Some(r), _) => text.push_str(&format!("[stopped: {r}]")),
                (None, Some(0)) if text.is_empty() => text.push_str("(no output; use print() to see values)"),
                (None, Some(c)) if c != 0 => text.push_str(&format!("[exit code {c}]")),
                _ => {}
            }
            let condensed =
                format!("python ran: {}", cut_chars(&text.split_whitespace().collect::<Vec<_>>().join(" "), 200));
            Rendered { text: text.trim_end().to_string(), condensed, cited: vec![] }
        }
    }
}

fn cut_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "are", "was", "be", "what", "how", "which",
    "who", "does", "do", "with", "by", "it", "its", "this", "that", "find", "about", "from", "as", "at", "can", "i",
    "you", "me",
];

fn terms(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .collect()
}

/// Split into sections (paragraphs merged up to a few hundred characters), score each against the
/// goal (BM25 over sections), keep the best until the token budget is used, and give them back in
/// document order with gaps marked. Returns (text, sections shown, sections in total).
pub fn excerpt_for_goal(text: &str, goal: &str, token_budget: usize) -> (String, usize, usize) {
    let mut sections: Vec<String> = vec![];
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        match sections.last_mut() {
            Some(last) if last.len() + para.len() < 600 => {
                last.push_str("\n\n");
                last.push_str(para);
            }
            _ => sections.push(para.to_string()),
        }
    }
    // Very long paragraphs (text without blank lines) are cut into pieces.
    let sections: Vec<String> = sections
        .into_iter()
        .flat_map(|s| {
            let chars: Vec<char> = s.chars().collect();
            chars.chunks(1500).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>()
        })
        .collect();
    let total = sections.len();
    if total == 0 {
        return ("(the document has no text)".into(), 0, 0);
    }
    let goal_terms: HashSet<String> = terms(goal).into_iter().collect();
    let sec_terms: Vec<Vec<String>> = sections.iter().map(|s| terms(s)).collect();
    let avg_len = sec_terms.iter().map(Vec::len).sum::<usize>().max(1) as f32 / total as f32;
    let mut scores: Vec<(usize, f32)> = sec_terms
        .iter()
        .enumerate()
        .map(|(i, ts)| {
            let mut score = 0.0;
            for g in &goal_terms {
                let tf = ts.iter().filter(|t| *t == g).count() as f32;
                if tf == 0.0 {
                    continue;
                }
                let df = sec_terms.iter().filter(|s| s.contains(g)).count() as f32;
                let idf = ((total as f32 - df + 0.5) / (df + 0.5) + 1.0).ln();
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * ts.len() as f32 / avg_len));
            }
            // The opening section says what the page is about; a small bonus keeps it when tied.
            (i, score + if i == 0 { 0.1 } else { 0.0 })
        })
        .collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen = vec![];
    let mut used = 0;
    for (i, _) in &scores {
        let t = approx_tokens(&sections[*i]);
        if used + t > token_budget {
            if chosen.is_empty() {
                // Even the best section is too long: take its start.
                let keep = token_budget * 7 / 2;
                chosen.push((*i, Some(keep)));
                break;
            }
            continue;
        }
        used += t;
        chosen.push((*i, None));
    }
    chosen.sort();
    let mut out = String::new();
    let mut prev: Option<usize> = None;
    for (i, cut) in &chosen {
        if prev.map_or(*i > 0, |p| *i > p + 1) {
            out.push_str("[…]\n\n");
        }
        match cut {
            Some(bytes) => out.push_str(&cut_chars(&sections[*i], *bytes)),
            None => out.push_str(&sections[*i]),
        }
        out.push_str("\n\n");
        prev = Some(*i);
    }
    if prev.is_some_and(|p| p + 1 < total) {
        out.push_str("[…]");
    }
    (out.trim_end().to_string(), chosen.len(), total)
}

/// A fixed in-memory corpus (tests, demos).
pub struct MemoryCorpus {
    pub pages: Vec<Page>,
}

impl Corpus for MemoryCorpus {
    fn describe(&self) -> String {
        format!("a collection of {} documents", self.pages.len())
    }

    fn search(&self, query: &str, k: usize) -> Result<Vec<SearchHit>> {
        let q: HashSet<String> = terms(query).into_iter().collect();
        let mut scored: Vec<(usize, &Page)> = self
            .pages
            .iter()
            .map(|p| (terms(&format!("{} {}", p.title, p.text)).iter().filter(|t| q.contains(*t)).count(), p))
            .filter(|(s, _)| *s > 0)
            .collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        Ok(scored
            .into_iter()
            .take(k)
            .map(|(_, p)| SearchHit {
                id: p.id.clone(),
                title: p.title.clone(),
                snippet: cut_chars(&p.text, 200),
                source: p.source.clone(),
            })
            .collect())
    }

    fn open(&self, id: &str) -> Result<Page> {
        self.pages
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or_else(|| anyhow!("no document with id '{id}'; use an id from the search results"))
    }
}

/// Milliseconds since `t`.
pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolbox() -> Toolbox {
        let pages = vec![
            Page {
                id: "doc/a".into(),
                title: "Alpha".into(),
                source: "a.html".into(),
                text: "alpha is the first letter.\n\nIt has nothing to do with zeta.".into(),
            },
            Page {
                id: "doc/z".into(),
                title: "Zeta".into(),
                source: "z.html".into(),
                text: "zeta is a late letter.".into(),
            },
        ];
        Toolbox { corpus: Some(Arc::new(MemoryCorpus { pages })), python: None, budgets: Budgets::default() }
    }

    #[test]
    fn schemas_are_openai_functions_with_required_arguments() {
        let tb = toolbox();
        let s = tb.schemas();
        let names: Vec<&str> = s.as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["search", "visit"]);
        assert_eq!(s[1]["function"]["parameters"]["required"], json!(["id", "goal"]));
        let with_py = Toolbox { python: Some(Limits::default()), ..tb };
        assert_eq!(with_py.schemas().as_array().unwrap().len(), 3);
    }

    #[test]
    fn bad_arguments_and_unknown_tools_are_errors_not_panics() {
        let tb = toolbox();
        assert!(tb.execute("search", &json!({})).unwrap_err().to_string().contains("missing argument 'query'"));
        assert!(tb.execute("search", &json!("zeta")).is_err());
        assert!(tb
            .execute("visit", &json!({"id": "nope", "goal": "x"}))
            .unwrap_err()
            .to_string()
            .contains("no document"));
        assert!(tb
            .execute("python", &json!({"code": "print(1)"}))
            .unwrap_err()
            .to_string()
            .contains("unknown tool 'python'"));
        assert!(tb.execute("browse", &json!({})).unwrap_err().to_string().contains("available tools: search, visit"));
    }

    #[test]
    fn search_and_visit_render_with_stable_citation_numbers() {
        let tb = toolbox();
        let mut sources = Sources::default();
        let r = tb.execute("search", &json!({"query": "zeta letter"})).unwrap();
        let out = render(&r, &tb.budgets, Some(&mut sources));
        assert!(out.text.starts_with("[1] Zeta\nid: doc/z"), "{}", out.text);
        assert!(out.text.contains("[2] Alpha"));
        let r = tb.execute("visit", &json!({"id": "doc/a", "goal": "zeta"})).unwrap();
        let out = render(&r, &tb.budgets, Some(&mut sources));
        assert!(out.text.starts_with("[2] Alpha"), "{}", out.text);
        assert!(sources.get(2).unwrap().visited && !sources.get(1).unwrap().visited);
    }

    #[test]
    fn visit_keeps_the_sections_that_match_the_goal_within_budget() {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!(
                "Paragraph {i} talks about unrelated filler material number {i}. {}\n\n",
                "lorem ipsum ".repeat(40)
            ));
        }
        text.push_str("The walrus operator := assigns inside expressions (PEP 572).\n\n");
        text.push_str(&"more filler text. ".repeat(50));
        let (ex, shown, total) = excerpt_for_goal(&text, "what does the walrus operator do", 200);
        assert!(ex.contains("walrus operator :="), "{ex}");
        assert!(shown < total && approx_tokens(&ex) <= 260, "{shown}/{total}, {} tokens", approx_tokens(&ex));
        assert!(ex.contains("[…]"));
    }
}
