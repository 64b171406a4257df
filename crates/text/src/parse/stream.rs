//! `StreamParser`: the incremental form of `parse_output` for streaming. Text arrives in chunks; events
//! come out as soon as they are certain. A chunk ending in what may be the start of a tag ("<thi",
//! "</tool_c") is held back until the next chunk decides, and whitespace that `parse_output` would trim
//! is held until text follows it. Pushing any split of a text and then calling `finish` yields events
//! that add up to exactly `parse_output` of the whole text.

use super::{tool_call, ToolCallItem, CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN};

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Reasoning(String),
    /// The reasoning block closed (`</think>` seen), even if it was empty.
    ReasoningEnd,
    Content(String),
    ToolCall(ToolCallItem),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Not yet known whether the output opens with `<think>`.
    Start,
    Reasoning,
    Content,
    /// Inside a `<tool_call>` block, collecting its body.
    ToolCall,
}

#[derive(Debug)]
pub struct StreamParser {
    mode: Mode,
    /// Text received but not yet handed out.
    buf: String,
    reasoning: Trimmer,
    content: Trimmer,
}

impl StreamParser {
    pub fn new(prompt_opened_think: bool) -> Self {
        StreamParser {
            mode: if prompt_opened_think {
                Mode::Reasoning
            } else {
                Mode::Start
            },
            buf: String::new(),
            reasoning: Trimmer::default(),
            content: Trimmer::default(),
        }
    }

    pub fn push(&mut self, chunk: &str) -> Vec<StreamEvent> {
        self.buf.push_str(chunk);
        let mut events = Vec::new();
        self.advance(&mut events, false);
        events
    }

    /// Whether the text so far is inside the reasoning block (for thinking budgets).
    pub fn in_reasoning(&self) -> bool {
        self.mode == Mode::Reasoning
    }

    /// Flushes what is held back; the output is complete.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        self.advance(&mut events, true);
        let rest = std::mem::take(&mut self.buf);
        match self.mode {
            Mode::Start | Mode::Content => {
                self.content.push(&rest, &mut events, StreamEvent::Content)
            }
            Mode::Reasoning => self
                .reasoning
                .push(&rest, &mut events, StreamEvent::Reasoning),
            Mode::ToolCall => events.push(StreamEvent::ToolCall(tool_call::unclosed(&rest))),
        }
        self.mode = Mode::Content;
        events
    }

    /// Consumes as much of `buf` as can be decided. At the end (`done`) nothing more is coming, so a
    /// partial tag is plain text; `finish` flushes that.
    fn advance(&mut self, events: &mut Vec<StreamEvent>, done: bool) {
        loop {
            match self.mode {
                Mode::Start => {
                    let trimmed = self.buf.trim_start();
                    if let Some(after) = trimmed.strip_prefix(THINK_OPEN) {
                        self.buf = after.to_string();
                        self.mode = Mode::Reasoning;
                    } else if !done && THINK_OPEN.starts_with(trimmed) {
                        return; // only whitespace or a prefix of "<think>" so far
                    } else {
                        self.mode = Mode::Content;
                    }
                }
                Mode::Reasoning => match self.buf.find(THINK_CLOSE) {
                    Some(end) => {
                        let text: String = self.buf.drain(..end + THINK_CLOSE.len()).collect();
                        self.reasoning
                            .push(&text[..end], events, StreamEvent::Reasoning);
                        events.push(StreamEvent::ReasoningEnd);
                        self.mode = Mode::Content;
                    }
                    None => {
                        let keep = if done {
                            0
                        } else {
                            partial_tag_len(&self.buf, THINK_CLOSE)
                        };
                        let text: String = self.buf.drain(..self.buf.len() - keep).collect();
                        self.reasoning.push(&text, events, StreamEvent::Reasoning);
                        return;
                    }
                },
                Mode::Content => match self.buf.find(CALL_OPEN) {
                    Some(open) => {
                        let text: String = self.buf.drain(..open + CALL_OPEN.len()).collect();
                        self.content
                            .push(&text[..open], events, StreamEvent::Content);
                        self.mode = Mode::ToolCall;
                    }
                    None => {
                        let keep = if done {
                            0
                        } else {
                            partial_tag_len(&self.buf, CALL_OPEN)
                        };
                        let text: String = self.buf.drain(..self.buf.len() - keep).collect();
                        self.content.push(&text, events, StreamEvent::Content);
                        return;
                    }
                },
                Mode::ToolCall => match self.buf.find(CALL_CLOSE) {
                    Some(close) => {
                        let block: String = self.buf.drain(..close + CALL_CLOSE.len()).collect();
                        events.push(StreamEvent::ToolCall(tool_call::parse(&block[..close])));
                        self.mode = Mode::Content;
                    }
                    None => return, // the body is needed whole
                },
            }
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag` (text that may become the tag).
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// Hands out one section's text (reasoning or content) trimmed as `parse_output` trims it: leading
/// whitespace dropped, whitespace held until something follows it (and dropped if nothing does).
#[derive(Debug, Default)]
struct Trimmer {
    started: bool,
    pending: String,
}

impl Trimmer {
    fn push(&mut self, text: &str, events: &mut Vec<StreamEvent>, wrap: fn(String) -> StreamEvent) {
        let text = if self.started {
            text
        } else {
            text.trim_start()
        };
        if text.is_empty() {
            return;
        }
        let body = text.trim_end();
        if body.is_empty() {
            self.pending.push_str(text);
            return;
        }
        self.started = true;
        let mut out = std::mem::take(&mut self.pending);
        out.push_str(body);
        self.pending.push_str(&text[body.len()..]);
        events.push(wrap(out));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_output, ParsedOutput};
    use super::*;

    /// Folds events into the shape `parse_output` returns.
    fn collect(events: Vec<StreamEvent>) -> ParsedOutput {
        let mut reasoning: Option<String> = None;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for e in events {
            match e {
                StreamEvent::Reasoning(r) => reasoning.get_or_insert_with(String::new).push_str(&r),
                StreamEvent::ReasoningEnd => {}
                StreamEvent::Content(c) => content.push_str(&c),
                StreamEvent::ToolCall(t) => tool_calls.push(t),
            }
        }
        ParsedOutput {
            reasoning,
            content,
            tool_calls,
        }
    }

    const SAMPLES: &[(&str, bool)] = &[
        ("<think>\nLet me see.\n</think>\n\nThe answer is 4.", false),
        ("\nhmm\n</think>\n\nok", true),
        ("  <think>\nstill thinking <tool_call>", false),
        ("thinking", true),
        ("  Hello <think> there  ", false),
        ("<thi", false),
        ("<think>\n\n</think>\n\nHi", false),
        ("", false),
        ("   ", true),
        ("<think>需要天气 😀</think>\n\n查一下。\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}\n</tool_call>\n\n好 ",  false),
        ("a <tool_call>{\"name\": \"f\", \"arguments\": {</tool_call> b <tool_call>{\"name\": \"g\"", false),
        ("x </tool_call> <tool_call <tool_call></tool_call> </think> <", false),
        ("r1 </thin r2 </think>  c1  \n <tool_cal c2 <tool_call>{\"name\":\"n\"}</tool_call>  \n ", true),
    ];

    #[test]
    fn whole_text_in_one_push_matches_parse_output() {
        for &(text, opened) in SAMPLES {
            let mut p = StreamParser::new(opened);
            let mut events = p.push(text);
            events.extend(p.finish());
            assert_eq!(collect(events), parse_output(text, opened), "{text:?}");
        }
    }

    #[test]
    fn every_split_point_matches_parse_output() {
        for &(text, opened) in SAMPLES {
            let want = parse_output(text, opened);
            let cuts: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            for &i in &cuts {
                let mut p = StreamParser::new(opened);
                let mut events = p.push(&text[..i]);
                events.extend(p.push(&text[i..]));
                events.extend(p.finish());
                assert_eq!(collect(events), want, "{text:?} split at {i}");
            }
            // And one character at a time.
            let mut p = StreamParser::new(opened);
            let mut events = Vec::new();
            for c in text.chars() {
                events.extend(p.push(c.encode_utf8(&mut [0; 4])));
            }
            events.extend(p.finish());
            assert_eq!(collect(events), want, "{text:?} char by char");
        }
    }

    #[test]
    fn holds_back_partial_tags_only() {
        let mut p = StreamParser::new(false);
        assert_eq!(p.push("<thi"), vec![]);
        assert!(!p.in_reasoning());
        assert_eq!(p.push("nk>Hmm"), vec![StreamEvent::Reasoning("Hmm".into())]);
        assert_eq!(
            p.push(" ok</th"),
            vec![StreamEvent::Reasoning(" ok".into())]
        );
        assert_eq!(
            p.push("ink>\n\nAns"),
            vec![
                StreamEvent::ReasoningEnd,
                StreamEvent::Content("Ans".into())
            ]
        );
        assert_eq!(
            p.push("wer <tool"),
            vec![StreamEvent::Content("wer".into())]
        );
        assert_eq!(
            p.push("box>"),
            vec![StreamEvent::Content(" <toolbox>".into())]
        );
        assert_eq!(p.finish(), vec![]);
    }
}
