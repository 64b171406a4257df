//! `nanbeige mcp --index IDX`: the agent's tools (search, visit, python) over the Model Context
//! Protocol on stdin/stdout, for other agent clients. Nothing but protocol messages goes to stdout.

use crate::research::ToolArgs;
use anyhow::Result;
use clap::Args;
use std::sync::Arc;

#[derive(Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
}

pub fn mcp(a: McpArgs) -> Result<()> {
    let tools = Arc::new(a.tools.toolbox()?);
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    nanbeige_agent::mcp::serve(tools, stdin, stdout)
}
