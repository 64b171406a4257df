//! Training data: chat JSONL (one `{"messages": [...], "tools": [...]?}` per line, OpenAI style, with
//! optional `reasoning_content` and `tool_calls`) rendered with the model's own chat template into
//! token ids plus a per-token loss mask that is on only for assistant turns; and packing of examples
//! into rows of at most `batch_tokens` tokens with per-token positions and segment ids.
//!
//! Assistant spans are found by rendering prefixes: the conversation up to turn i with the
//! generation prompt marks where turn i starts, the conversation through turn i marks where it ends.
//! Each span is tokenized on its own (templates put special tokens at the boundaries, so this is how
//! the model sees them). A bad line (invalid JSON, missing fields, no assistant turn, too long) is
//! reported with its line number and skipped. Not here: batching into optimizer steps (sft.rs),
//! mixture weights (schedule.rs).

use anyhow::{bail, Context, Result};
use nanbeige_text::{ChatTemplate, TextAssets};
use serde_json::Value;
use std::path::Path;

/// One tokenized conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// `mask[i]`: token i is an assistant token (its prediction is trained).
    pub mask: Vec<bool>,
    /// 1-based line in the source file.
    pub line: usize,
}

impl Example {
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }
}

/// A skipped input line and why.
#[derive(Clone, Debug)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

/// Render a conversation and mark the assistant tokens. `messages` is a JSON array of messages.
pub fn tokenize_chat(
    text: &TextAssets,
    template: &ChatTemplate,
    messages: &Value,
    tools: Option<&Value>,
) -> Result<(Vec<u32>, Vec<bool>)> {
    let msgs = messages.as_array().context("`messages` must be an array")?;
    if msgs.is_empty() {
        bail!("`messages` is empty");
    }
    for (i, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).with_context(|| format!("message {i} has no `role`"))?;
        let has_content = m.get("content").is_some_and(|c| !c.is_null());
        if !has_content && m.get("tool_calls").is_none() {
            bail!("message {i} ({role}) has no `content`");
        }
    }
    if !msgs.iter().any(|m| m["role"] == "assistant") {
        bail!("no assistant message to learn from");
    }
    let msgs = fold_reasoning(template, msgs, tools)?;
    let tools = tools.filter(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    let render = |upto: usize, gen: bool| template.render(&Value::Array(msgs[..upto].to_vec()), tools, gen, None);
    let full = render(msgs.len(), false)?;
    // Character spans [start, end) of the assistant turns in `full`.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        // `"weight": 0` marks an assistant turn as context only (trajectory histories).
        if m["role"] != "assistant" || m.get("weight").and_then(Value::as_f64) == Some(0.0) {
            continue;
        }
        let start = if i == 0 { String::new() } else { render(i, true)? };
        let through = render(i + 1, false)?;
        // Templates that rewrite earlier turns (e.g. drop old reasoning) do not render
        // incrementally; such a turn is context only.
        if full.starts_with(&start) && full.starts_with(&through) && through.len() > start.len() {
            spans.push((start.len(), through.len()));
        }
    }
    if spans.is_empty() {
        bail!("the chat template does not render the assistant turns as a prefix of the conversation");
    }
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    let mut pos = 0;
    let mut push = |piece: &str, trained: bool| -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        let t = text.tokenizer.encode(piece, false)?;
        mask.extend(std::iter::repeat_n(trained, t.len()));
        ids.extend(t);
        Ok(())
    };
    for (s, e) in spans {
        push(&full[pos..s], false)?;
        push(&full[s..e], true)?;
        pos = e;
    }
    push(&full[pos..], false)?;
    Ok((ids, mask))
}

/// If the template drops `reasoning_content` (SmolLM2's does), put it into the content as
/// `<think>\n…\n</think>\n\n` so the reasoning is still trained, in the Nanbeige answer format.
fn fold_reasoning(template: &ChatTemplate, msgs: &[Value], tools: Option<&Value>) -> Result<Vec<Value>> {
    let reasoning: Vec<(usize, String)> = msgs
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let r = m.get("reasoning_content")?.as_str()?.trim();
            (!r.is_empty()).then(|| (i, r.to_string()))
        })
        .collect();
    let Some((last, probe)) = reasoning.last() else { return Ok(msgs.to_vec()) };
    let tools = tools.filter(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    let rendered = template.render(&Value::Array(msgs[..=*last].to_vec()), tools, false, None)?;
    if rendered.contains(probe.as_str()) {
        return Ok(msgs.to_vec());
    }
    let mut out = msgs.to_vec();
    for (i, r) in reasoning {
        let content = out[i].get("content").and_then(Value::as_str).unwrap_or("").to_string();
        out[i]["content"] = Value::String(format!("<think>\n{r}\n</think>\n\n{}", content.trim_start()));
        if let Some(o) = out[i].as_object_mut() {
            o.remove("reasoning_content");
        }
    }
    Ok(out)
}

/// Parse one JSONL line into an example.
fn parse_line(text: &TextAssets, template: &ChatTemplate, line: &str, max_len: usize) -> Result<(Vec<u32>, Vec<bool>)> {
    let v: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
    let messages = v.get("messages").context("missing field `messages`")?;
    let (ids, mask) = tokenize_chat(text, template, messages, v.get("tools"))?;
    if ids.len() > max_len {
        bail!("too long: {} tokens, the limit is {max_len}", ids.len());
    }
    if !mask.iter().skip(1).any(|&m| m) {
        bail!("no assistant token left to predict");
    }
    Ok((ids, mask))
}

/// Read a chat JSONL file. Returns the examples and the skipped lines (blank lines are ignored).
pub fn load_jsonl(
    path: &Path,
    text: &TextAssets,
    template: &ChatTemplate,
    max_len: usize,
) -> Result<(Vec<Example>, Vec<BadLine>)> {
    let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let content = String::from_utf8_lossy(&content);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(text, template, line, max_len) {
            Ok((ids, mask)) => good.push(Example { ids, mask, line: i + 1 }),
            Err(e) => bad.push(BadLine { line: i + 1, reason: format!("{e:#}") }),
        }
    }
    Ok((good, bad))
}

/// Several examples packed into one row: each keeps its own positions (from 0) and segment id, and
/// the model's block-diagonal mask keeps them apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Packed {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub segments: Vec<u32>,
    /// `targets[i]`: the token position i must predict (the next token of its own example).
    pub targets: Vec<u32>,
    /// Whether position i's prediction counts: the next token exists in the same example and is an
    /// assistant token.
    pub weights: Vec<f32>,
}

impl Packed {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Number of trained predictions.
    pub fn trained(&self) -> usize {
        self.weights.iter().filter(|&&w| w > 0.0).count()
    }

    pub fn push(&mut self, ex: &Example) {
        let seg = self.segments.last().map(|s| s + 1).unwrap_or(0);
        let n = ex.ids.len();
        for i in 0..n {
            self.ids.push(ex.ids[i]);
            self.positions.push(i as u32);
            self.segments.push(seg);
            let (t, w) = if i + 1 < n { (ex.ids[i + 1], if ex.mask[i + 1] { 1.0 } else { 0.0 }) } else { (0, 0.0) };
            self.targets.push(t);
            self.weights.push(w);
        }
    }
}

/// Deterministic shuffled order of `n` items for `epoch` (Fisher-Yates on a splitmix stream).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Indices 0..n drawn without replacement, reshuffled (`epoch_order`) at each new epoch, forever:
/// the order of examples in the DPO, reward-model and RL loops.
pub struct Shuffled {
    n: usize,
    seed: u64,
    epoch: u64,
    cursor: usize,
    order: Vec<usize>,
}

impl Shuffled {
    pub fn new(n: usize, seed: u64) -> Self {
        Self { n, seed, epoch: 0, cursor: 0, order: epoch_order(n, seed, 0) }
    }

    /// The next index (n must be > 0).
    pub fn next_index(&mut self) -> usize {
        if self.cursor == self.n {
            self.epoch += 1;
            self.cursor = 0;
            self.order = epoch_order(self.n, self.seed, self.epoch);
        }
        self.cursor += 1;
        self.order[self.cursor - 1]
    }
}

/// splitmix64: tiny, seedable, and the same on every platform (data order must be reproducible).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An endless, reshuffled-every-epoch stream over one dataset. Its position (epoch, cursor) is
/// all a checkpoint needs to resume it.
#[derive(Clone, Debug)]
pub struct Stream {
    pub examples: Vec<Example>,
    pub seed: u64,
    pub epoch: u64,
    pub cursor: usize,
    order: Vec<usize>,
}

impl Stream {
    pub fn new(examples: Vec<Example>, seed: u64) -> Result<Self> {
        if examples.is_empty() {
            bail!("no usable training examples");
        }
        let order = epoch_order(examples.len(), seed, 0);
        Ok(Self { examples, seed, epoch: 0, cursor: 0, order })
    }

    /// Move to a saved position.
    pub fn seek(&mut self, epoch: u64, cursor: usize) {
        self.epoch = epoch;
        self.cursor = cursor.min(self.examples.len());
        self.order = epoch_order(self.examples.len(), self.seed, epoch);
    }

    pub fn peek(&self) -> &Example {
        &self.examples[self.order[self.cursor]]
    }

    pub fn advance(&mut self) {
        self.cursor += 1;
        if self.cursor == self.examples.len() {
            self.seek(self.epoch + 1, 0);
        }
    }
}

/// Fill one row from the streams: each example comes from a dataset drawn with `weights` (one per
/// stream); the row ends when the next example would not fit in `batch_tokens`. Always takes at
/// least one example (every example fits, as loading rejects longer ones).
pub fn pack_row(streams: &mut [Stream], weights: &[f64], batch_tokens: usize, rng: &mut Rng) -> Packed {
    let mut row = Packed::default();
    loop {
        let d = pick(weights, rng);
        let ex = streams[d].peek();
        if !row.is_empty() && row.len() + ex.ids.len() > batch_tokens {
            break;
        }
        row.push(ex);
        streams[d].advance();
        if row.len() >= batch_tokens {
            break;
        }
    }
    row
}

/// Index drawn with probability proportional to `weights` (zero weights are never drawn).
pub fn pick(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.unit() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 && x < *w {
            return i;
        }
        x -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize, line: usize) -> Example {
        Example { ids: (0..n as u32).map(|i| i + 10 * line as u32).collect(), mask: vec![true; n], line }
    }

    #[test]
    fn packing_restarts_positions_and_never_crosses_examples() {
        let mut s = vec![Stream::new(vec![ex(3, 1), ex(4, 2), ex(2, 3)], 1).unwrap()];
        let mut rng = Rng::new(0);
        let row = pack_row(&mut s, &[1.0], 8, &mut rng);
        // Examples in some order; positions restart at each segment boundary.
        let mut seg_start = 0;
        for i in 0..row.len() {
            if i > 0 && row.segments[i] != row.segments[i - 1] {
                seg_start = i;
                assert_eq!(row.weights[i - 1], 0.0, "last token of an example predicts nothing");
            }
            assert_eq!(row.positions[i] as usize, i - seg_start);
        }
        assert!(row.len() <= 8);
        assert_eq!(*row.weights.last().unwrap(), 0.0);
    }

    #[test]
    fn epoch_orders_are_permutations_and_differ() {
        let a = epoch_order(50, 3, 0);
        let b = epoch_order(50, 3, 1);
        let mut sa = a.clone();
        sa.sort();
        assert_eq!(sa, (0..50).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(50, 3, 0));
    }

    #[test]
    fn pick_follows_weights() {
        let mut rng = Rng::new(9);
        let w = [0.2, 0.0, 0.8];
        let mut counts = [0usize; 3];
        for _ in 0..20000 {
            counts[pick(&w, &mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        let frac = counts[2] as f64 / 20000.0;
        assert!((frac - 0.8).abs() < 0.015, "{frac}");
    }
}
