//! A local iroh relay for the relay tests: `relay_server [BIND_ADDR]` (default `127.0.0.1:0`).
//!
//! The same relay server as the `iroh-relay` binary (`iroh_relay::server`) over plain HTTP, as
//! `iroh-relay --dev` runs it: no TLS, no QUIC address discovery, nothing outside the machine.
//! Prints `relay listening on http://ADDR/` once it accepts connections, then runs until killed
//! or until its stdin closes.

use iroh_relay::server::{RelayConfig, Server, ServerConfig};
use std::io::Read;
use std::net::SocketAddr;

fn main() {
    let bind: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:0").parse().expect("BIND_ADDR");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mut config = ServerConfig::default();
        config.relay = Some(RelayConfig::new(bind));
        let server = Server::spawn(config).await.expect("the relay server starts");
        let addr = server.http_addr().expect("the relay serves HTTP");
        println!("relay listening on http://{addr}/");
        // Stdin closing (the test ended) stops the relay; so does killing it.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = tx.send(());
        });
        let _ = rx.await;
        let _ = server.shutdown().await;
    });
}
