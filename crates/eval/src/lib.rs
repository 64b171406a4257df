//! nanbeige-eval: built-in verifiable task data (generators with disjoint train/held-out splits),
//! scorers that the RL trainer reuses as rewards, and the evaluation runner behind `nanbeige eval`
//! (in-process engine or OpenAI-compatible endpoint, resumable JSONL log, confidence intervals,
//! paired comparison of two runs).

pub mod backend;
pub mod expr;
pub mod items;
pub mod rng;
pub mod runner;
pub mod sandbox;
pub mod score;
pub mod stats;
pub mod tasks;
