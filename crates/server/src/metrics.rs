//! Counters and histograms for `GET /metrics`, in the Prometheus text format: requests by outcome,
//! tokens, queue depth, batch size, decode speed and time to first token.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

const TTFT_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    pub requests_ok: AtomicU64,
    pub requests_client_error: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub requests_server_error: AtomicU64,
    pub cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub prefix_entries: AtomicUsize,
    pub prefix_tokens: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    ttft_counts: [u64; TTFT_BUCKETS.len()],
    ttft_sum: f64,
    ttft_n: u64,
    decode_steps: u64,
    decode_tokens: u64,
    decode_seconds: f64,
    last_tokens_per_sec: f64,
}

impl Metrics {
    pub fn observe_ttft(&self, seconds: f64) {
        let mut m = self.inner.lock().unwrap();
        for (i, b) in TTFT_BUCKETS.iter().enumerate() {
            if seconds <= *b {
                m.ttft_counts[i] += 1;
            }
        }
        m.ttft_sum += seconds;
        m.ttft_n += 1;
    }

    /// One batched decode step that produced `batch` tokens in `seconds`.
    pub fn observe_step(&self, batch: usize, seconds: f64) {
        let mut m = self.inner.lock().unwrap();
        m.decode_steps += 1;
        m.decode_tokens += batch as u64;
        m.decode_seconds += seconds;
        if seconds > 0.0 {
            m.last_tokens_per_sec = batch as f64 / seconds;
        }
    }

    pub fn render(&self) -> String {
        let (prefix_entries, prefix_tokens) =
            (self.prefix_entries.load(Ordering::Relaxed), self.prefix_tokens.load(Ordering::Relaxed));
        let m = self.inner.lock().unwrap();
        let mut s = String::new();
        let g = |s: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let _ = writeln!(s, "# HELP nanbeige_requests_total Requests by outcome.\n# TYPE nanbeige_requests_total counter");
        for (outcome, c) in [
            ("ok", &self.requests_ok),
            ("client_error", &self.requests_client_error),
            ("rejected", &self.requests_rejected),
            ("server_error", &self.requests_server_error),
        ] {
            let _ = writeln!(s, "nanbeige_requests_total{{outcome=\"{outcome}\"}} {}", c.load(Ordering::Relaxed));
        }
        g(&mut s, "nanbeige_requests_cancelled_total", "Generations stopped early (client gone or timeout).", "counter", self.cancelled.load(Ordering::Relaxed).to_string());
        g(&mut s, "nanbeige_prompt_tokens_total", "Prompt tokens received.", "counter", self.prompt_tokens.load(Ordering::Relaxed).to_string());
        g(&mut s, "nanbeige_prompt_tokens_cached_total", "Prompt tokens served from the prefix cache.", "counter", self.cached_prompt_tokens.load(Ordering::Relaxed).to_string());
        g(&mut s, "nanbeige_completion_tokens_total", "Tokens generated.", "counter", self.completion_tokens.load(Ordering::Relaxed).to_string());
        g(&mut s, "nanbeige_queue_depth", "Requests waiting for a batch slot.", "gauge", self.queued.load(Ordering::Relaxed).to_string());
        g(&mut s, "nanbeige_batch_size", "Sequences in the running batch.", "gauge", self.active.load(Ordering::Relaxed).to_string());
        g(&mut s, "nanbeige_requests_in_flight", "HTTP generation requests being served.", "gauge", self.in_flight.load(Ordering::Relaxed).to_string());
        g(&mut s, "nanbeige_decode_tokens_per_second", "Tokens per second of the last batched decode step.", "gauge", format!("{:.3}", m.last_tokens_per_sec));
        let avg = if m.decode_seconds > 0.0 { m.decode_tokens as f64 / m.decode_seconds } else { 0.0 };
        g(&mut s, "nanbeige_decode_tokens_per_second_avg", "Tokens per second over all decode steps.", "gauge", format!("{avg:.3}"));
        g(&mut s, "nanbeige_prefix_cache_entries", "Sessions held by the prefix cache.", "gauge", prefix_entries.to_string());
        g(&mut s, "nanbeige_prefix_cache_tokens", "Tokens held by the prefix cache.", "gauge", prefix_tokens.to_string());
        let _ = writeln!(s, "# HELP nanbeige_time_to_first_token_seconds Time from request to first token.\n# TYPE nanbeige_time_to_first_token_seconds histogram");
        for (i, b) in TTFT_BUCKETS.iter().enumerate() {
            let _ = writeln!(s, "nanbeige_time_to_first_token_seconds_bucket{{le=\"{b}\"}} {}", m.ttft_counts[i]);
        }
        let _ = writeln!(s, "nanbeige_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {}", m.ttft_n);
        let _ = writeln!(s, "nanbeige_time_to_first_token_seconds_sum {}", m.ttft_sum);
        let _ = writeln!(s, "nanbeige_time_to_first_token_seconds_count {}", m.ttft_n);
        s
    }
}
