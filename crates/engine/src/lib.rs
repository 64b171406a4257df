//! nanbeige-engine: loads a model with its tokenizer and template, and generates text from it
//! (sampling, stop conditions, thinking budget, prefix reuse). Shared by the CLI, server, agent
//! and trainer.

pub mod batch;
pub mod bench;
pub mod generate;
pub mod hub;
pub mod json_constraint;
pub mod load;
pub mod machine;
pub mod prompt;
pub mod sampler;

pub use batch::{generate_batch, plan_feeds, BatchRequest, STEP_TOKENS};
pub use generate::{generate, prompt_opens_think, FinishReason, GenParams, Generation, Session};
pub use load::{load, EngineOptions, Format, LoadedModel};
pub use sampler::{Sampler, SamplingParams};
