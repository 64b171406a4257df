//! The `nanbeige` command: argument parsing and dispatch. Each subcommand lives in its own file;
//! errors from any of them print one `error:` line and exit non-zero.

mod bench;
mod chat;
mod data;
mod eval;
mod index;
mod inspect;
mod mcp;
mod research;
mod run;
mod serve;
mod synth;
mod train;
mod train_rl;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use nanbeige_engine::{hub, EngineOptions, GenParams, LoadedModel};
use nanbeige_model::LoadOptions;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "nanbeige", version, about = "Run and train Nanbeige4.1-class language models locally")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One-shot generation from a prompt, streamed (reasoning on stderr, answer on stdout).
    Run(run::RunArgs),
    /// Interactive multi-turn chat (/reset, /system TEXT, /exit; Ctrl-C stops a reply).
    Chat(chat::ChatArgs),
    /// Architecture, parameter count, tensor types, context, template and special tokens.
    Info(inspect::InfoArgs),
    /// Print the exact prompt the chat template renders for a conversation (and its token ids).
    Prompt(inspect::PromptArgs),
    /// Tokenize text with a model's tokenizer.
    Tokenize(inspect::TokenizeArgs),
    /// Download a known model into the cache (smollm2, qwen2.5-coder, minilm, or all).
    Pull(inspect::PullArgs),
    /// OpenAI-compatible HTTP server with continuous batching, streaming, tools and prefix cache.
    Serve(serve::ServeArgs),
    /// Write a random-weight model of any Llama config (e.g. nanbeige-3b) as HF bf16 or GGUF.
    Synth(synth::SynthArgs),
    /// Prefill/decode speed, bandwidth ceiling and peak memory of a model on this machine.
    Bench(bench::BenchArgs),
    /// Build or update a private document index over txt, md and html files (BM25, optional vectors).
    Index(index::IndexArgs),
    /// Search an index made by `nanbeige index`: id, source, title, score and snippet per hit.
    Search(index::SearchArgs),
    /// Built-in verifiable task data: `data gen arith|add|add-compare|word|countdown|code` writes chat JSONL.
    Data(data::DataArgs),
    /// Evaluate a model or endpoint (math, countdown, code pass@k, mc, tool calls) with 95% CIs;
    /// `eval compare A.jsonl B.jsonl` compares two runs.
    Eval(eval::EvalArgs),
    /// Deep-search agent: the model searches an index (--index) or the web (--web), reads, runs
    /// Python, and answers with numbered citations.
    Research(research::ResearchArgs),
    /// Serve the agent's tools (search, visit, python) over the Model Context Protocol on stdio.
    Mcp(mcp::McpArgs),
    /// Fine-tune (`train sft`, full or LoRA) or distill (`train distill`) a model on chat JSONL.
    Train(train::TrainArgs),
}

/// Which model and how to load it (shared by every subcommand that runs a model).
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A model directory (HF safetensors), a .gguf file, or a short name (smollm2, qwen2.5-coder).
    /// Default: smollm2 (SmolLM2-135M-Instruct), fetched on first use.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Float dtype for safetensors weights (f32, bf16, f16); default: as stored.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Dequantize GGUF weights to f32 (exact float path; slower, more memory).
    #[arg(long)]
    pub dequantize: bool,
    /// Context length (prompt + output) to allow; default: the model's, at most 32768.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// KV cache storage: f32 (exact) or q8 (int8 rows: 4x less memory and faster decode at long
    /// context, at a small accuracy cost).
    #[arg(long, default_value = "f32")]
    pub kv_cache: String,
}

impl ModelArgs {
    pub fn path(&self) -> Result<PathBuf> {
        hub::resolve(self.model.as_deref())
    }

    pub fn load(&self) -> Result<LoadedModel> {
        let path = self.path()?;
        let dtype = self.dtype.as_deref().map(nanbeige_engine::load::parse_dtype).transpose()?;
        let opts = EngineOptions {
            load: LoadOptions { dtype, dequantize: self.dequantize, progress: true },
            context_len: self.ctx,
            kv_cache: self.kv_cache.parse()?,
        };
        nanbeige_engine::load(&path, &opts)
    }
}

/// Sampling and stopping flags; unset sampling flags fall back to the model's generation_config.
#[derive(Args, Clone, Default)]
pub struct GenArgs {
    /// 0 = greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long)]
    pub presence_penalty: Option<f32>,
    #[arg(long)]
    pub frequency_penalty: Option<f32>,
    /// Same seed, same output.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most tokens to generate (default: until EOS or the context is full).
    #[arg(long, short = 'n')]
    pub max_tokens: Option<usize>,
    /// Stop when this text appears (repeatable); it is not included in the output.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Close the model's <think> section after this many reasoning tokens.
    #[arg(long)]
    pub max_thinking_tokens: Option<usize>,
    /// Do not stop at end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl GenArgs {
    pub fn params(&self, lm: &LoadedModel) -> GenParams {
        let mut s = lm.sampling_defaults.clone().unwrap_or_default();
        let set = |dst: &mut f32, v: Option<f32>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut s.temperature, self.temperature);
        set(&mut s.top_p, self.top_p);
        set(&mut s.min_p, self.min_p);
        set(&mut s.repetition_penalty, self.repetition_penalty);
        set(&mut s.presence_penalty, self.presence_penalty);
        set(&mut s.frequency_penalty, self.frequency_penalty);
        if let Some(k) = self.top_k {
            s.top_k = k;
        }
        s.seed = self.seed;
        GenParams {
            sampling: s,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            max_thinking_tokens: self.max_thinking_tokens,
            logprobs: None,
            json_schema: None,
        }
    }
}

/// Process-wide settings that make the CPU paths fast; run before any tensor work.
fn tune_process() {
    // candle asks for its thread count on every f32 matmul and, without this variable, re-reads
    // /proc/cpuinfo each time; rayon reads it once when its pool starts. `bench --threads` and an
    // explicit RAYON_NUM_THREADS still win.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // glibc serves large blocks (activations, attention scores: megabytes per op in prefill) with a
    // fresh mmap that it unmaps on free, so every op page-faults its output in again. Keeping them
    // on the heap and not trimming it makes prefill ~25% faster; the memory is reused, not leaked.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() {
    tune_process();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Chat(a) => chat::chat(a),
        Cmd::Info(a) => inspect::info(a),
        Cmd::Prompt(a) => inspect::prompt(a),
        Cmd::Tokenize(a) => inspect::tokenize(a),
        Cmd::Pull(a) => inspect::pull(a),
        Cmd::Synth(a) => synth::synth(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Data(a) => data::data(a),
        Cmd::Eval(a) => eval::eval(a),
        Cmd::Research(a) => research::research(a),
        Cmd::Mcp(a) => mcp::mcp(a),
        Cmd::Train(a) => train::train(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Index(a) => index::index(a),
        Cmd::Search(a) => index::search(a),
    };
    if let Err(e) = result {
        // One line: the error and its causes, outermost first.
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
