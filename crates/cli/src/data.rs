//! `nanbeige data gen TASK`: writes built-in verifiable task data (arith, add, add-compare, word, countdown, code) as
//! chat JSONL for training and evaluation; the same seed and split always give the same file.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use nanbeige_eval::tasks::{self, Split};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    cmd: DataCmd,
}

#[derive(Subcommand)]
enum DataCmd {
    /// Generate N problems with worked solutions (arith, add, add-compare, word, countdown, code).
    Gen(GenArgs),
}

#[derive(Args)]
struct GenArgs {
    /// arith (3–6 digits, ×), add (2–3 digit + and −), add-compare (add's problems, each subtraction column
    /// naming both digits before the borrow decision), word, countdown or code.
    task: String,
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// train, or test (held out: never the same problem as any train file).
    #[arg(long, default_value = "train")]
    split: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Put the worked step-by-step solution in the assistant turn's reasoning_content.
    #[arg(long)]
    reasoning: bool,
    /// Output file (JSONL); default: standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn data(a: DataArgs) -> Result<()> {
    let DataCmd::Gen(g) = a.cmd;
    let split = Split::parse(&g.split)?;
    let examples = tasks::generate(&g.task, split, g.n, g.seed)?;
    let mut out: Box<dyn Write> = match &g.out {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ))
        }
        None => Box::new(std::io::stdout().lock()),
    };
    for e in &examples {
        writeln!(out, "{}", e.to_json(g.reasoning)).context("writing the data")?;
    }
    out.flush().context("writing the data")?;
    if let Some(p) = &g.out {
        eprintln!(
            "wrote {} {} examples ({:?} split, seed {}) to {}",
            examples.len(),
            g.task,
            split,
            g.seed,
            p.display()
        );
    }
    Ok(())
}
