//! nanbeige-agent: the deep-search agent. Tools (search, visit, python) over a private index or
//! the web, a sandbox for Python, the agent loop with context management for long horizons, a
//! JSONL trajectory log, and an MCP server exposing the same tools.
//!
//! Not here: the index itself (nanbeige-index), the model (nanbeige-engine), the CLI (crates/cli).

pub mod agent;
pub mod brain;
pub mod context;
pub mod local;
pub mod mcp;
pub mod sandbox;
pub mod tools;
pub mod trajectory;
pub mod web;

pub use agent::{Agent, AgentConfig, Outcome as AgentOutcome};
pub use brain::{Brain, EndpointBrain, EngineBrain, Reply};
pub use sandbox::{run_python, run_python_with_input, Limits, Outcome};
pub use tools::{Budgets, Corpus, Toolbox};
