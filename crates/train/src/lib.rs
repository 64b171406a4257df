//! nanbeige-train: supervised fine-tuning, distillation and the pieces reinforcement learning
//! reuses, on the model code inference runs (nanbeige-model's differentiable path).
//!
//! One file per concern: data.rs (chat JSONL to tokens and assistant-only loss masks, packing),
//! loss.rs (token log-probs, cross-entropy, KL, DPO), optim.rs (AdamW, accumulation, clipping),
//! schedule.rs (constant, cosine, WSD, FG-WSD with data mixtures), lora.rs, checkpoint.rs (HF
//! directories and resumable state), metrics.rs (JSONL log, SVG plots), sft.rs (the training
//! loop), distill.rs (token-level KD, sequence-level distillation, dual preference distillation),
//! bench.rs (forward+backward throughput).

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod distill;
pub mod grpo;
pub mod lora;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod rewards;
pub mod rl;
pub mod rm;
pub mod schedule;
pub mod sft;
pub mod trajectory;
