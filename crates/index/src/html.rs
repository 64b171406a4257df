//! HTML → clean text for indexing and for the agent's `visit` tool.
//!
//! Parses with `scraper` (html5ever, so broken markup is fine), reads the page's main content
//! (`[role=main]`, `<main>`, `<article>`, else `<body>`) and drops chrome: scripts, styles, nav,
//! header/footer, forms, Sphinx sidebars and permalink marks. The text keeps paragraph breaks; each
//! heading becomes its own line prefixed with markdown `#`s (so `chunk` can split sections), list
//! items start with `- `, table cells are joined with ` | `, `<pre>` keeps its layout inside ``` fences.
//! It does not run JavaScript, read CSS visibility, or fetch anything.

use ego_tree::NodeRef;
use scraper::{ElementRef, Html, Node, Selector};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Page {
    pub title: String,
    pub text: String,
    /// Heading texts in document order, with their anchor when there is one: `Text (#anchor)`.
    pub headings: Vec<String>,
    /// Link targets (resolved against the base when one is given), in order, without duplicates.
    pub links: Vec<String>,
}

/// Extract a page without a base URL: relative links are kept as written.
pub fn extract(html: &str) -> Page {
    extract_with_base(html, None)
}

/// Extract a page, resolving relative links against `base` (an absolute URL such as
/// `https://host/a/b.html` or `file:///library/functools.html`).
pub fn extract_with_base(html: &str, base: Option<&str>) -> Page {
    let doc = Html::parse_document(html);
    let base = base.and_then(|b| url::Url::parse(b).ok());
    let sel = |s: &str| Selector::parse(s).expect("static selector");
    let title =
        doc.select(&sel("title")).next().map(|t| collapse_ws(&t.text().collect::<String>())).unwrap_or_default();
    let root = ["[role=main]", "main", "article", "body"]
        .iter()
        .find_map(|s| doc.select(&sel(s)).next())
        .unwrap_or_else(|| doc.root_element());
    let mut w = Walker { out: String::new(), line: String::new(), headings: vec![], links: vec![], base };
    w.walk(*root);
    w.flush_line();
    let mut title = title;
    if title.is_empty() {
        title = w.headings.first().map(|h| strip_anchor(h).to_string()).unwrap_or_default();
    }
    Page { title, text: w.out.trim().to_string(), headings: w.headings, links: w.links }
}

fn strip_anchor(h: &str) -> &str {
    match h.rfind(" (#") {
        Some(i) if h.ends_with(')') => &h[..i],
        _ => h,
    }
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

const SKIP_TAGS: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "header", "footer", "form", "button", "svg", "iframe", "head",
    "select", "input", "textarea",
];
/// Sphinx / docs-theme chrome, by class.
const SKIP_CLASSES: &[&str] = &[
    "sphinxsidebar",
    "related",
    "headerlink",
    "footer",
    "mobile-nav",
    "menu-wrapper",
    "inline-search",
    "toctree-wrapper",
];
const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "section",
    "br",
    "hr",
    "li",
    "dt",
    "dd",
    "dl",
    "ul",
    "ol",
    "table",
    "tr",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "details",
    "summary",
    "main",
    "article",
    "aside",
    "body",
    "caption",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
];

struct Walker {
    out: String,
    line: String,
    headings: Vec<String>,
    links: Vec<String>,
    base: Option<url::Url>,
}

impl Walker {
    /// End the current paragraph: append it (whitespace collapsed) followed by a blank line.
    fn flush_line(&mut self) {
        let t = collapse_ws(&self.line);
        self.line.clear();
        if !t.is_empty() {
            self.out.push_str(&t);
            self.out.push_str("\n\n");
        }
    }

    fn add_link(&mut self, href: &str) {
        let href = href.trim();
        if href.is_empty() || href.starts_with('#') || href.starts_with("javascript:") || href.starts_with("mailto:") {
            return;
        }
        let resolved = match &self.base {
            Some(b) => b.join(href).map(|u| u.to_string()).unwrap_or_else(|_| href.to_string()),
            None => href.to_string(),
        };
        if !self.links.contains(&resolved) {
            self.links.push(resolved);
        }
    }

    fn walk(&mut self, node: NodeRef<Node>) {
        // An explicit stack instead of recursion: deeply nested markup must not overflow the stack.
        enum Step<'a> {
            Enter(NodeRef<'a, Node>),
            Leave(&'a str),
        }
        let mut stack = vec![Step::Enter(node)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Leave(tag) => self.leave(tag),
                Step::Enter(n) => match n.value() {
                    Node::Text(t) => self.line.push_str(t),
                    Node::Element(e) => {
                        let tag = e.name();
                        if SKIP_TAGS.contains(&tag) || e.classes().any(|c| SKIP_CLASSES.contains(&c)) {
                            continue;
                        }
                        if e.attr("role") == Some("navigation") || e.attr("aria-hidden") == Some("true") {
                            continue;
                        }
                        let el = ElementRef::wrap(n).expect("element node");
                        match tag {
                            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                                self.heading(el, tag[1..].parse().unwrap_or(1));
                                continue;
                            }
                            "pre" => {
                                self.flush_line();
                                let code: String = el.text().collect();
                                let code = code.trim_matches('\n');
                                if !code.trim().is_empty() {
                                    // Fenced, so a `# comment` line in code is not taken for a heading.
                                    self.out.push_str("```\n");
                                    self.out.push_str(code);
                                    self.out.push_str("\n```\n\n");
                                }
                                continue;
                            }
                            "a" => {
                                if let Some(h) = e.attr("href") {
                                    self.add_link(h);
                                }
                            }
                            "img" => {
                                if let Some(alt) = e.attr("alt").filter(|a| !a.trim().is_empty()) {
                                    self.line.push_str(&format!(" [{}] ", alt.trim()));
                                }
                            }
                            _ => {}
                        }
                        if BLOCK_TAGS.contains(&tag) {
                            self.flush_line();
                        }
                        match tag {
                            "li" => self.line.push_str("- "),
                            "td" | "th" => self.line.push_str(" | "),
                            _ => {}
                        }
                        stack.push(Step::Leave(tag));
                        for c in n.children().rev() {
                            stack.push(Step::Enter(c));
                        }
                    }
                    _ => {}
                },
            }
        }
    }

    fn leave(&mut self, tag: &str) {
        if BLOCK_TAGS.contains(&tag) {
            self.flush_line();
        }
    }

    fn heading(&mut self, el: ElementRef, level: usize) {
        self.flush_line();
        // Text without permalink marks (¶), whitespace collapsed.
        let mut text = String::new();
        for d in el.descendants() {
            if let Node::Text(t) = d.value() {
                let skip = d
                    .ancestors()
                    .take_while(|a| a.id() != el.id())
                    .any(|a| a.value().as_element().is_some_and(|e| e.classes().any(|c| c == "headerlink")));
                if !skip {
                    text.push_str(t);
                }
            }
            if let Some(e) = d.value().as_element() {
                if e.name() == "a" {
                    if let Some(h) = e.attr("href") {
                        self.add_link(h);
                    }
                }
            }
        }
        let text = collapse_ws(&text);
        if text.is_empty() {
            return;
        }
        // The anchor: the heading's own id, else its enclosing <section>'s (Sphinx puts it there).
        let anchor = el.value().id().map(str::to_string).or_else(|| {
            el.parent()
                .and_then(|p| p.value().as_element())
                .filter(|p| p.name() == "section" || p.name() == "div")
                .and_then(|p| p.id())
                .map(str::to_string)
        });
        self.headings.push(match anchor {
            Some(a) => format!("{text} (#{a})"),
            None => text.clone(),
        });
        self.out.push_str(&"#".repeat(level));
        self.out.push(' ');
        self.out.push_str(&text);
        self.out.push_str("\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPHINX: &str = r##"<!DOCTYPE html><html><head><title>functools — Higher-order functions &#8212; Python docs</title>
<script>var x = "do not index me";</script><style>.a{color:red}</style></head>
<body><div class="related" role="navigation"><a href="../index.html">index</a> modules</div>
<div class="sphinxsidebar"><h3>Table of Contents</h3><ul><li>sidebar entry</li></ul></div>
<div class="body" role="main"><section id="module-functools">
<h1>functools — Higher-order <em>functions</em><a class="headerlink" href="#module-functools">¶</a></h1>
<p>The <a href="../glossary.html#term-decorator">decorator</a> module is
   for <b>higher-order</b>    functions.</p>
<section id="caching"><h2>Caching</h2><ul><li>first item</li><li>second item</li></ul>
<pre>def f(x):
    return x</pre>
<table><tr><th>Name</th><th>Use</th></tr><tr><td>cache</td><td>memoize</td></tr></table>
</section></section></div>
<div class="footer">© footer text</div></body></html>"##;

    #[test]
    fn sphinx_page_main_text_without_chrome() {
        let p = extract_with_base(SPHINX, Some("file:///library/functools.html"));
        assert_eq!(p.title, "functools — Higher-order functions — Python docs");
        assert_eq!(p.headings, vec!["functools — Higher-order functions (#module-functools)", "Caching (#caching)"]);
        assert!(p.text.starts_with("# functools — Higher-order functions\n\n"), "{}", p.text);
        assert!(p.text.contains("The decorator module is for higher-order functions.\n\n"));
        assert!(p.text.contains("## Caching\n\n- first item\n\n- second item"));
        assert!(p.text.contains("```\ndef f(x):\n    return x\n```\n\n"), "pre keeps layout: {}", p.text);
        assert!(p.text.contains("| Name | Use"), "{}", p.text);
        for junk in ["do not index me", "color:red", "sidebar entry", "footer text", "¶", "modules"] {
            assert!(!p.text.contains(junk), "chrome `{junk}` leaked: {}", p.text);
        }
        assert_eq!(p.links, vec!["file:///glossary.html#term-decorator"]);
    }

    #[test]
    fn no_base_keeps_links_and_title_falls_back_to_h1() {
        let p = extract("<h1 id=top>Hello</h1><p>see <a href='a/b.html'>b</a> and <a href='#x'>x</a></p>");
        assert_eq!(p.title, "Hello");
        assert_eq!(p.headings, vec!["Hello (#top)"]);
        assert_eq!(p.links, vec!["a/b.html"]);
        assert_eq!(p.text, "# Hello\n\nsee b and x");
    }

    #[test]
    fn garbage_and_deep_nesting_do_not_panic() {
        assert_eq!(extract("").text, "");
        assert_eq!(extract("<<<>>> &&& </p></div>").text, "<<<>>> &&&");
        let deep = "<div>".repeat(50_000) + "deep text" + &"</div>".repeat(50_000);
        assert!(extract(&deep).text.contains("deep text"));
    }
}
