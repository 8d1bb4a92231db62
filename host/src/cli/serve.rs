//! `sluice serve`: load the config, build the gateway, start the watchers
//! that bring in new plugin versions, and serve until SIGTERM or ctrl-c,
//! letting in-flight requests finish within `server.shutdown_grace_ms`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;

/// How long a stopping node tries to hand back leases and write queued
/// rate-limit corrections.
const STATE_CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(&path).with_context(|| format!("{}", path.display())),
        None => Ok(Config::embedded_default(&|name| std::env::var(name).ok())),
    }
}

pub(super) async fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let embedded = config.is_none();
    let config_path = config.clone();
    let mut config = load_config(config)?;
    crate::telemetry::init_logging(config.telemetry.log_format, &config.telemetry.log_level)
        .context("telemetry")?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    // With no config and no provider in the environment, serve a demo: an
    // in-process mock provider, so the first run works with no key.
    let _demo = if embedded && demo_wanted() {
        let mock = crate::mock::try_spawn(Default::default()).context("demo mock provider")?;
        tracing::warn!(
            upstream = %mock.base_url(),
            "no OPENAI_API_KEY or OPENAI_BASE_URL set: serving a built-in mock provider (demo mode)"
        );
        for p in &mut config.providers {
            if p.name == "openai" {
                p.base_url = mock.base_url();
            }
        }
        Some(mock)
    } else {
        None
    };
    let gw = crate::gateway::Gateway::build(config).await?;
    // Room for `server.max_connections` sockets under a low default soft
    // limit (the listener serves fewer if the hard limit is low too).
    crate::listener::raise_fd_limit();
    let addr = gw.config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "sluice listening");
    println!("sluice listening on http://{local}");
    if let Some(path) = &config_path {
        // Changes to a plugin's `[plugins.<slot>]` reload it.
        gw.plugins.watch_config_file(path);
    }
    crate::versions::spawn_watchers(&gw.plugins);
    let workers = crate::job_runner::spawn_workers(&gw);
    if let Some(admin_addr) = gw.config.server.admin_listen {
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("admin API: listening on {admin_addr}"))?;
        println!("sluice admin API on http://{}", admin.local_addr()?);
        // Dies with the process; the admin API has no long requests to drain.
        tokio::spawn(crate::admin::serve(
            admin,
            gw.clone(),
            std::future::pending(),
        ));
    }
    let grace = gw.config.server.shutdown_grace();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_workers = workers.as_ref().map(|w| w.stopper());
    let shutdown = async move {
        super::shutdown_signal().await;
        // Workers stop claiming at once and finish alongside the requests.
        if let Some(stop) = stop_workers {
            stop(grace);
        }
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = crate::server::run(listener, gw.clone(), shutdown);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    // Running jobs finish within the grace period or go back to the queue.
    if let Some(workers) = workers {
        workers.shutdown(grace).await;
    }
    // Hand back leases and write queued rate-limit corrections.
    gw.state.close(STATE_CLOSE_DEADLINE).await;
    Ok(ExitCode::SUCCESS)
}

fn demo_wanted() -> bool {
    std::env::var_os("OPENAI_API_KEY").is_none()
        && std::env::var_os("OPENAI_BASE_URL").is_none()
        && std::env::var_os("ANTHROPIC_API_KEY").is_none()
        && std::env::var_os("ANTHROPIC_BASE_URL").is_none()
}
