//! nanbeige-text: everything between text and token ids for the Llama-family models nanbeige runs —
//! tokenizers (tokenizer.json or rebuilt from GGUF metadata), chat templates rendered like transformers,
//! incremental detokenization, and splitting model output into reasoning, answer and tool calls.
//!
//! It does no model math and no sampling; the engine crate drives it.

pub mod parse;
pub mod stream;
pub mod template;
pub mod tokenizer;

pub use parse::{parse_output, ParsedOutput, StreamEvent, StreamParser, ToolCallItem};
pub use stream::StreamDecoder;
pub use template::{ChatTemplate, TemplateError};
pub use tokenizer::{TextAssets, Tokenizer};

#[cfg(test)]
mod tests {
    /// The engine shares these across threads.
    #[test]
    fn thread_safe_types() {
        fn check<T: Send + Sync>() {}
        check::<crate::Tokenizer>();
        check::<crate::TextAssets>();
        check::<crate::ChatTemplate>();
        check::<crate::StreamParser>();
    }
}
