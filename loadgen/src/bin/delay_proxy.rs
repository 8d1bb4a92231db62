//! `sluice-delay-proxy LISTEN UPSTREAM ONE_WAY_MS`: a TCP proxy that adds
//! ONE_WAY_MS of latency in each direction (loopback only), for putting
//! Redis "far" from a gateway in benchmarks. Runs until killed.

use std::time::Duration;

use sluice_loadgen::delay::DelayProxy;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream, ms] => listen
            .parse()
            .ok()
            .zip(upstream.parse().ok())
            .zip(ms.parse::<u64>().ok()),
        _ => None,
    };
    let Some(((listen, upstream), ms)) = parsed else {
        eprintln!("usage: sluice-delay-proxy LISTEN_ADDR UPSTREAM_ADDR ONE_WAY_MS");
        return std::process::ExitCode::FAILURE;
    };
    match DelayProxy::start(listen, upstream, Duration::from_millis(ms)).await {
        Ok(proxy) => {
            println!(
                "delay proxy on {} -> {upstream}, {ms} ms each way",
                proxy.addr()
            );
            std::future::pending::<()>().await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice-delay-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
