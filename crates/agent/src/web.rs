//! The web as a `Corpus`: search through an adapter (a SearxNG instance's JSON API, or the Brave
//! Search API with its key from `BRAVE_API_KEY`) and read pages by fetching them over http(s) and
//! turning their HTML into clean text (nanbeige-index's extractor).
//!
//! Not here: JavaScript rendering, PDFs, robots.txt, caching. Any URL the model names is fetched,
//! so do not give the web tools to an agent that runs inside a network with private services.

use crate::tools::{Corpus, Page, SearchHit};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::time::Duration;

/// Largest page body read.
const MAX_PAGE_BYTES: u64 = 8 << 20;

pub trait SearchBackend: Send + Sync {
    fn describe(&self) -> String;
    fn search(&self, http: &ureq::Agent, query: &str, k: usize) -> Result<Vec<SearchHit>>;
}

/// `searxng:URL` (the instance must have the json format enabled), `brave` or `brave:URL` (the
/// endpoint, for a proxy or a test server).
pub fn backend_from_spec(spec: &str) -> Result<Box<dyn SearchBackend>> {
    let (kind, rest) = spec.split_once(':').map(|(k, r)| (k, Some(r))).unwrap_or((spec, None));
    match kind {
        "searxng" => {
            let base = rest
                .filter(|r| !r.is_empty())
                .ok_or_else(|| anyhow!("--web searxng needs the instance URL: searxng:http://host:8080"))?;
            check_http_url(base)?;
            Ok(Box::new(Searxng { base: base.trim_end_matches('/').to_string() }))
        }
        "brave" => {
            let key = std::env::var("BRAVE_API_KEY").ok().filter(|k| !k.trim().is_empty());
            let key =
                key.ok_or_else(|| anyhow!("--web brave needs the API key in the BRAVE_API_KEY environment variable"))?;
            let endpoint = match rest {
                Some(r) => {
                    check_http_url(r)?;
                    r.to_string()
                }
                None => "https://api.search.brave.com/res/v1/web/search".to_string(),
            };
            Ok(Box::new(Brave { endpoint, key }))
        }
        _ => bail!("unknown web backend '{spec}'; use searxng:URL or brave"),
    }
}

fn check_http_url(u: &str) -> Result<()> {
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        bail!("'{u}' is not an http(s) URL");
    }
    Ok(())
}

pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent("nanbeige-agent/0.1")
        .build()
        .into()
}

fn get_json(req: ureq::RequestBuilder<ureq::typestate::WithoutBody>, what: &str) -> Result<Value> {
    let mut resp =
        req.header("Accept", "application/json").call().with_context(|| format!("{what}: request failed"))?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_PAGE_BYTES)
        .read_to_string()
        .with_context(|| format!("{what}: reading the response"))?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", body.chars().take(200).collect::<String>());
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: the response is not JSON"))
}

pub struct Searxng {
    pub base: String,
}

impl SearchBackend for Searxng {
    fn describe(&self) -> String {
        "the web".into()
    }

    fn search(&self, http: &ureq::Agent, query: &str, k: usize) -> Result<Vec<SearchHit>> {
        let url = format!("{}/search", self.base);
        let v = get_json(http.get(&url).query("q", query).query("format", "json"), "searxng")?;
        let results = v
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("searxng: no 'results' array in the response"))?;
        Ok(results.iter().filter_map(|r| hit(r, "url", "title", "content")).take(k).collect())
    }
}

pub struct Brave {
    pub endpoint: String,
    key: String,
}

impl SearchBackend for Brave {
    fn describe(&self) -> String {
        "the web".into()
    }

    fn search(&self, http: &ureq::Agent, query: &str, k: usize) -> Result<Vec<SearchHit>> {
        let req = http
            .get(&self.endpoint)
            .query("q", query)
            .query("count", k.clamp(1, 20).to_string())
            .header("X-Subscription-Token", &self.key);
        let v = get_json(req, "brave search")?;
        // No web results at all (e.g. a query with none) comes without the `web` key.
        let results = v.pointer("/web/results").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(results.iter().filter_map(|r| hit(r, "url", "title", "description")).take(k).collect())
    }
}

fn hit(r: &Value, url: &str, title: &str, snippet: &str) -> Option<SearchHit> {
    let u = r.get(url)?.as_str()?.to_string();
    let s = |k: &str| r.get(k).and_then(Value::as_str).map(strip_tags).unwrap_or_default();
    Some(SearchHit { title: s(title), snippet: s(snippet), source: u.clone(), id: u })
}

/// Search APIs mark matches with <strong>; the model needs plain text.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&").replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")
}

pub struct WebCorpus {
    pub backend: Box<dyn SearchBackend>,
    pub http: ureq::Agent,
}

impl WebCorpus {
    pub fn new(backend: Box<dyn SearchBackend>) -> Self {
        Self { backend, http: http_agent(Duration::from_secs(20)) }
    }
}

impl Corpus for WebCorpus {
    fn describe(&self) -> String {
        self.backend.describe()
    }

    fn search(&self, query: &str, k: usize) -> Result<Vec<SearchHit>> {
        self.backend.search(&self.http, query, k)
    }

    fn open(&self, url: &str) -> Result<Page> {
        fetch_page(&self.http, url)
    }
}

/// GET a page and turn it into clean text (HTML) or take it as is (plain text, markdown, JSON).
pub fn fetch_page(http: &ureq::Agent, url: &str) -> Result<Page> {
    check_http_url(url).context("visit takes the URL of a search result")?;
    let mut resp = http.get(url).call().with_context(|| format!("fetching {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("fetching {url}: HTTP {status}");
    }
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_PAGE_BYTES)
        .lossy_utf8(true)
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    let looks_html = ctype.contains("html") || (ctype.is_empty() && body.trim_start().starts_with('<'));
    if looks_html {
        let p = nanbeige_index::html::extract_with_base(&body, Some(url));
        let title = if p.title.is_empty() { url.to_string() } else { p.title };
        return Ok(Page { id: url.to_string(), title, source: url.to_string(), text: p.text });
    }
    if ctype.starts_with("text/") || ctype.contains("json") || ctype.contains("xml") {
        return Ok(Page { id: url.to_string(), title: url.to_string(), source: url.to_string(), text: body });
    }
    bail!("{url} is {ctype}, which cannot be read as text")
}
