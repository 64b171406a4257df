//! Web backends and page fetching against fake HTTP servers on loopback: the SearxNG JSON API, the
//! Brave Search API (key header, missing key), HTML pages turned into clean text, plain text, and
//! the failures (404, binary content, bad JSON, refused connection) as clear errors.

use nanbeige_agent::tools::{Budgets, Corpus, Toolbox};
use nanbeige_agent::web::{backend_from_spec, WebCorpus};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Serves `routes` (path prefix → (status, content type, body)); records each request head.
fn fake_server(routes: Vec<(&'static str, u16, &'static str, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(vec![]));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            seen2.lock().unwrap().push(head);
            let (status, ctype, body) = routes
                .iter()
                .find(|(p, ..)| path.starts_with(p))
                .map(|(_, s, c, b)| (*s, *c, b.clone()))
                .unwrap_or((404, "text/plain", "not found".into()));
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, seen)
}

#[test]
fn searxng_results_become_search_hits() {
    let body = json!({"query": "walrus", "results": [
        {"url": "https://docs.example/walrus", "title": "PEP 572 <b>walrus</b>", "content": "Assignment expressions &amp; more"},
        {"title": "no url: skipped"},
        {"url": "https://docs.example/two", "title": "Two", "content": "second"}
    ]})
    .to_string();
    let (base, seen) = fake_server(vec![("/search", 200, "application/json", body)]);
    let web = WebCorpus::new(backend_from_spec(&format!("searxng:{base}/")).unwrap());
    let hits = web.search("walrus operator", 5).unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].id, "https://docs.example/walrus");
    assert_eq!(hits[0].title, "PEP 572 walrus");
    assert_eq!(hits[0].snippet, "Assignment expressions & more");
    let head = seen.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("GET /search?q=walrus+operator&format=json ")
            || head.starts_with("GET /search?q=walrus%20operator&format=json "),
        "{head}"
    );
    assert_eq!(web.search("walrus", 1).unwrap().len(), 1);
}

#[test]
fn brave_sends_the_key_and_reads_web_results() {
    let body = json!({"web": {"results": [{"url": "https://a.example/", "title": "A", "description": "about <strong>a</strong>"}]}}).to_string();
    let (base, seen) = fake_server(vec![("/res/v1/web/search", 200, "application/json", body)]);
    std::env::set_var("BRAVE_API_KEY", "test-key-123");
    let web = WebCorpus::new(backend_from_spec(&format!("brave:{base}/res/v1/web/search")).unwrap());
    let hits = web.search("a", 3).unwrap();
    assert_eq!((hits[0].id.as_str(), hits[0].snippet.as_str()), ("https://a.example/", "about a"));
    let head = seen.lock().unwrap()[0].to_lowercase();
    assert!(head.contains("x-subscription-token: test-key-123"), "{head}");
    assert!(head.contains("count=3"));
    std::env::remove_var("BRAVE_API_KEY");
    let e = backend_from_spec("brave").err().unwrap().to_string();
    assert!(e.contains("BRAVE_API_KEY"), "{e}");
}

#[test]
fn backend_errors_are_clear() {
    let (base, _) = fake_server(vec![
        ("/search", 500, "text/plain", "boom".into()),
        ("/bad", 200, "application/json", "{not json".into()),
    ]);
    let web = WebCorpus::new(backend_from_spec(&format!("searxng:{base}")).unwrap());
    let e = format!("{:#}", web.search("x", 3).unwrap_err());
    assert!(e.contains("HTTP 500") && e.contains("boom"), "{e}");
    let web = WebCorpus::new(backend_from_spec(&format!("searxng:{base}/bad")).unwrap());
    let e = format!("{:#}", web.search("x", 3).unwrap_err());
    assert!(e.contains("HTTP 404") || e.contains("not JSON"), "{e}");
    for bad in ["searxng", "searxng:ftp://x", "bing", "brave:nothttp"] {
        assert!(backend_from_spec(bad).is_err(), "{bad}");
    }
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let web = WebCorpus::new(backend_from_spec(&format!("searxng:http://127.0.0.1:{port}")).unwrap());
    assert!(format!("{:#}", web.search("x", 1).unwrap_err()).contains("request failed"));
}

#[test]
fn pages_are_fetched_as_clean_text_and_visited_for_a_goal() {
    let html = "<html><head><title>Walrus page</title><script>var x = 1;</script></head><body><nav>Home | Index</nav><main><h1>Assignment expressions</h1><p>The walrus operator <code>:=</code> names a value inside an expression.</p><p>Added in Python 3.8.</p></main></body></html>";
    let (base, _) = fake_server(vec![
        ("/page.html", 200, "text/html; charset=utf-8", html.into()),
        ("/notes.txt", 200, "text/plain", "plain notes\n\nsecond paragraph".into()),
        ("/img.png", 200, "image/png", "\u{1}PNG".into()),
        (
            "/search",
            200,
            "application/json",
            json!({"results": [{"url": format!("http://x/page.html"), "title": "t", "content": "c"}]}).to_string(),
        ),
    ]);
    let web = WebCorpus::new(backend_from_spec(&format!("searxng:{base}")).unwrap());
    let p = web.open(&format!("{base}/page.html")).unwrap();
    assert_eq!(p.title, "Walrus page");
    assert!(
        p.text.contains("The walrus operator `:=` names a value") || p.text.contains("The walrus operator :="),
        "{}",
        p.text
    );
    assert!(!p.text.contains("var x") && !p.text.contains("Home | Index"), "{}", p.text);
    assert_eq!(web.open(&format!("{base}/notes.txt")).unwrap().text, "plain notes\n\nsecond paragraph");
    assert!(format!("{:#}", web.open(&format!("{base}/img.png")).unwrap_err()).contains("image/png"));
    assert!(format!("{:#}", web.open(&format!("{base}/missing")).unwrap_err()).contains("HTTP 404"));
    assert!(format!("{:#}", web.open("library/walrus.html").unwrap_err()).contains("not an http(s) URL"));

    // Through the tool: visit with a goal.
    let tools = Toolbox { corpus: Some(Arc::new(web)), python: None, budgets: Budgets::default() };
    let r = tools.execute("visit", &json!({"id": format!("{base}/page.html"), "goal": "when was it added"})).unwrap();
    let text = nanbeige_agent::tools::render(&r, &tools.budgets, None).text;
    assert!(text.starts_with("Walrus page\nid: http://127.0.0.1:") && text.contains("Added in Python 3.8."), "{text}");
}
