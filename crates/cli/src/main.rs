//! The `tollgate` binary.
//!
//! Subcommands:
//! - `tollgate demo [--requests N] [--workers N] [--json]`: the same workload through a naive
//!   client and through the standard stack, against the built-in simulated provider.
//! - `tollgate classify [FILE] [--json]`: how Tollgate reads one captured provider response.
//! - `tollgate sim [--config FILE] [--port N]`: the simulated provider on loopback.
//! - `tollgate proxy --config FILE`: an OpenAI- and Anthropic-compatible gateway that sends
//!   every request through the standard stack.
//! - `tollgate bench --target URL [--rps N] [--duration 10s] [--json]`: an open-loop load
//!   generator.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod classify;
mod demo;
mod proxy;
mod sim;

/// Tollgate: call LLM APIs at volume without 429 storms.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the same workload through a naive client and through Tollgate, against the built-in
    /// simulated provider, and compare.
    Demo(demo::Args),
    /// Classify one captured HTTP response (status line, headers, blank line, body).
    Classify(classify::Args),
    /// Serve the simulated LLM provider (OpenAI and Anthropic APIs) until stopped.
    Sim(sim::Args),
    /// Serve an OpenAI- and Anthropic-compatible gateway: every `/v1/...` request goes through
    /// the standard stack to the configured upstream, with the upstream's key.
    Proxy(proxy::Args),
    /// Send requests at a fixed rate (open loop) and report throughput, statuses and latency
    /// percentiles.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run_demo(&args),
        Command::Classify(args) => classify::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Proxy(args) => proxy::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("tollgate: {error}");
            }
            ExitCode::from(2)
        }
    }
}
