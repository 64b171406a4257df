//! `nanbeige research "question"`: the deep-search agent. The model (in-process, or any
//! OpenAI-compatible endpoint) searches a private index (`--index`) or the web (`--web`), reads
//! documents, may run Python, and answers with numbered citations. Progress on stderr, the answer
//! (or `--json`) on stdout, every step in a JSONL trajectory with `--log`.

use crate::{GenArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use nanbeige_agent::agent::{Agent, AgentConfig};
use nanbeige_agent::brain::{Brain, EndpointBrain, EngineBrain};
use nanbeige_agent::tools::{Budgets, Corpus, Toolbox};
use nanbeige_agent::trajectory::Trajectory;
use nanbeige_agent::Limits;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ResearchArgs {
    /// The question (use `-` to read it from stdin).
    pub question: String,
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Drive an OpenAI-compatible server instead of a model in this process (e.g. http://host:8080).
    /// A key in NANBEIGE_API_KEY or OPENAI_API_KEY is sent as a bearer token.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The model name sent to --endpoint.
    #[arg(long, default_value = "default")]
    pub api_model: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Most model turns (each may call tools); the last one must answer.
    #[arg(long, default_value_t = 100)]
    pub max_turns: usize,
    /// Turns whose tool results are always kept whole in the context.
    #[arg(long, default_value_t = 3)]
    pub keep_whole: usize,
    /// Replace the default system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Print one JSON object (answer, citations, stats) instead of the answer text.
    #[arg(long)]
    pub json: bool,
    /// Append the trajectory (every prompt, output, tool call and result, with timings) to this JSONL file.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The tools: where search and visit look, whether python runs, how much each result may take.
#[derive(Args, Clone)]
pub struct ToolArgs {
    /// A private index built with `nanbeige index`.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// A web backend: searxng:URL (a SearxNG instance with JSON output) or brave (BRAVE_API_KEY).
    #[arg(long)]
    pub web: Option<String>,
    /// Do not offer the python tool.
    #[arg(long)]
    pub no_python: bool,
    /// Results per search.
    #[arg(long, default_value_t = 5)]
    pub search_k: usize,
    /// Tokens of a visited document shown to the model.
    #[arg(long, default_value_t = 1200)]
    pub visit_tokens: usize,
    /// Seconds one tool call may take.
    #[arg(long, default_value_t = 60)]
    pub tool_timeout: u64,
}

impl ToolArgs {
    pub fn toolbox(&self) -> Result<Toolbox> {
        let corpus: Option<Arc<dyn Corpus>> = match (&self.index, &self.web) {
            (Some(_), Some(_)) => bail!("use --index or --web, not both"),
            (Some(dir), None) => Some(Arc::new(nanbeige_agent::local::IndexCorpus::open(dir)?)),
            (None, Some(spec)) => {
                Some(Arc::new(nanbeige_agent::web::WebCorpus::new(nanbeige_agent::web::backend_from_spec(spec)?)))
            }
            (None, None) => None,
        };
        if self.search_k == 0 || self.visit_tokens < 50 {
            bail!("--search-k must be at least 1 and --visit-tokens at least 50");
        }
        let python = (!self.no_python).then(Limits::default);
        if corpus.is_none() && python.is_none() {
            bail!("no tools: give --index IDX or --web BACKEND (or allow python)");
        }
        let budgets = Budgets {
            search_k: self.search_k,
            visit_tokens: self.visit_tokens,
            tool_timeout: Duration::from_secs(self.tool_timeout.max(1)),
            ..Budgets::default()
        };
        Ok(Toolbox { corpus, python, budgets })
    }
}

pub fn research(a: ResearchArgs) -> Result<()> {
    let question = if a.question == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading the question from stdin")?;
        s
    } else {
        a.question.clone()
    };
    if question.trim().is_empty() {
        bail!("the question is empty");
    }
    if a.max_turns == 0 {
        bail!("--max-turns must be at least 1");
    }
    let tools = Arc::new(a.tools.toolbox()?);
    let reply_tokens = a.gen.max_tokens.unwrap_or(1024);
    let log = Trajectory::open(a.log.as_deref())?;
    let mut cfg = AgentConfig {
        max_turns: a.max_turns,
        max_reply_tokens: reply_tokens,
        keep_whole: a.keep_whole,
        progress: !a.quiet,
        ..AgentConfig::default()
    };
    if let Some(s) = &a.system {
        cfg.system = s.clone();
    }
    let lm;
    let mut brain: Box<dyn Brain + '_> = match &a.endpoint {
        Some(url) => {
            let mut b = EndpointBrain::new(url, &a.api_model, a.model.ctx.unwrap_or(32768))?;
            b.temperature = a.gen.temperature;
            Box::new(b)
        }
        None => {
            lm = a.model.load()?;
            let mut b = EngineBrain::new(&lm, a.gen.params(&lm));
            b.cancel = Some(crate::run::install_cancel());
            Box::new(b)
        }
    };
    if reply_tokens * 2 > brain.window() {
        bail!("--max-tokens {reply_tokens} leaves too little of the {}-token context for the prompt", brain.window());
    }
    if !a.quiet {
        eprintln!(
            "[research] {} · tools: {} · context {} tokens",
            brain.describe(),
            tools.names().join(", "),
            brain.window()
        );
    }
    let mut agent = Agent { brain: brain.as_mut(), tools, cfg, log };
    let out = agent.run(&question)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let shown = out.display();
        println!("{}", if shown.is_empty() { "(the model gave no answer)" } else { &shown });
        if !a.quiet {
            let s = &out.stats;
            eprintln!(
                "[research] {} turns, {} tool calls ({} errors), peak prompt {} / {} tokens, {:.1} s{}",
                s.turns,
                s.tool_calls.values().sum::<usize>(),
                s.tool_errors,
                s.max_prompt_tokens,
                s.window,
                s.wall_ms / 1e3,
                s.forced_final.as_ref().map(|f| format!(", final answer forced by the {f}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}
