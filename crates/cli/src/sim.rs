//! `tollgate sim`: the simulated provider, served on loopback until stopped.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tollgate_sim::{Sim, SimConfig};

/// Arguments of `tollgate sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML scenario (see docs/scenarios/); without one, a healthy provider that accepts any
    /// key.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            SimConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => SimConfig::default(),
    };
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let sim = Sim::start_on(config, SocketAddr::new(args.host, args.port))
            .await
            .map_err(|e| format!("cannot start the simulator: {e}"))?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {}", sim.url())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
        shutdown_signal().await;
        sim.shutdown().await;
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM on Unix.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
