//! `nanbeige serve`: the OpenAI-compatible HTTP server (nanbeige-server) on a loaded model.

use crate::ModelArgs;
use anyhow::Result;
use clap::Args;
use nanbeige_server::ServeOptions;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback by default; use 0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` (also read from NANBEIGE_API_KEY).
    #[arg(long, env = "NANBEIGE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Most sequences decoded together in one batch.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Most requests waiting for a batch slot; more get HTTP 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Tokens of finished conversations kept for prefix reuse (0 disables).
    #[arg(long, default_value_t = 65536)]
    pub prefix_cache_tokens: usize,
    /// Longest a generation may run, in seconds.
    #[arg(long, default_value_t = 600)]
    pub request_timeout: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Model name reported to clients (default: the file or directory name).
    #[arg(long)]
    pub name: Option<String>,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let path = a.model.path()?;
    let lm = Arc::new(a.model.load()?);
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let mut names = vec![a.name.clone().unwrap_or_else(|| stem.clone()), stem];
    if let Some(m) = &a.model.model {
        names.push(m.clone());
    }
    names.dedup();
    let opts = ServeOptions {
        host: a.host,
        port: a.port,
        model_names: names,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        max_batch: a.max_batch,
        max_queue: a.max_queue,
        prefix_cache_tokens: a.prefix_cache_tokens,
        request_timeout: Duration::from_secs(a.request_timeout.max(1)),
        max_body_bytes: a.max_body_bytes,
    };
    // The HTTP threads run at a lower priority than the model's compute threads: each streamed
    // token wakes one, and on a machine with as many compute threads as cores a wake-up that
    // preempts a compute thread mid-matmul stalls the whole batched step (about +5-10% aggregate
    // for 8 streams on SmolLM2). They still get their share of CPU, so requests are served.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| {
            // SAFETY: plain syscall on the calling thread (Linux applies PRIO_PROCESS 0 per thread).
            #[cfg(target_os = "linux")]
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            }
        })
        .enable_all()
        .build()?;
    rt.block_on(nanbeige_server::serve(lm, opts))
}
