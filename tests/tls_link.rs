//! Certificate pinning over a real TLS handshake on loopback: the client accepts exactly the
//! certificate named by the link's fingerprint and refuses any other with a clear message.

use roundtable::net::link::Link;
use roundtable::net::tls::{self, Identity};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Serves one TLS connection that echoes 4 bytes back; returns the port.
async fn echo_once(config: Arc<rustls::ServerConfig>) -> (u16, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        tls.shutdown().await
    });
    (port, task)
}

async fn connect(port: u16, pin: &str) -> std::io::Result<Vec<u8>> {
    let config = tls::client_config_pinned(pin).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut stream = TlsConnector::from(config).connect(tls::server_name("127.0.0.1"), tcp).await?;
    stream.write_all(b"ping").await?;
    let mut buf = vec![0u8; 4];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

fn identity() -> (tempfile::TempDir, Identity) {
    let dir = tempfile::tempdir().unwrap();
    let id = tls::load_or_create(dir.path()).unwrap();
    (dir, id)
}

#[tokio::test]
async fn pinned_fingerprint_from_the_link_completes_the_handshake() {
    let (_dir, id) = identity();
    let (port, server) = echo_once(tls::server_config(&id).unwrap()).await;
    let link = Link::new("127.0.0.1", port, "tok", Some(id.fingerprint.clone()));
    let parsed = Link::parse(&link.to_string()).unwrap();
    let echoed = connect(parsed.port, parsed.fingerprint.as_deref().unwrap()).await.unwrap();
    assert_eq!(echoed, b"ping");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_different_certificate_is_refused_with_a_fingerprint_mismatch() {
    let (_dir, id) = identity();
    let (_other_dir, other) = identity();
    let (port, server) = echo_once(tls::server_config(&id).unwrap()).await;

    let err = connect(port, &other.fingerprint).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("fingerprint did not match"), "{message}");
    assert!(message.contains(&other.fingerprint) && message.contains(&id.fingerprint), "{message}");

    let mismatch = tls::fingerprint_mismatch(&err).expect("the mismatch is recoverable from the io::Error");
    assert_eq!(mismatch.expected, other.fingerprint);
    assert_eq!(mismatch.got, id.fingerprint);
    // The server sees the client abort the handshake.
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn pinning_also_verifies_tls12_handshakes() {
    let (_dir, id) = identity();
    let key = rustls::pki_types::PrivateKeyDer::try_from(id.key_der.clone()).unwrap();
    let tls12_only = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![id.cert_der.clone().into()], key)
        .unwrap();
    let (port, server) = echo_once(Arc::new(tls12_only)).await;
    assert_eq!(connect(port, &id.fingerprint).await.unwrap(), b"ping");
    server.await.unwrap().unwrap();

    let (_other_dir, other) = identity();
    let key = rustls::pki_types::PrivateKeyDer::try_from(id.key_der.clone()).unwrap();
    let tls12_only = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![id.cert_der.clone().into()], key)
        .unwrap();
    let (port, _server) = echo_once(Arc::new(tls12_only)).await;
    let err = connect(port, &other.fingerprint).await.unwrap_err();
    assert!(tls::fingerprint_mismatch(&err).is_some(), "{err}");
}

#[tokio::test]
async fn the_pin_survives_a_host_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before = tls::load_or_create(dir.path()).unwrap();
    let after = tls::load_or_create(dir.path()).unwrap();
    let (port, server) = echo_once(tls::server_config(&after).unwrap()).await;
    assert_eq!(connect(port, &before.fingerprint).await.unwrap(), b"ping");
    server.await.unwrap().unwrap();
}

/// Serves TLS + WebSocket handshakes with `config` for as long as the test runs; returns the port.
async fn websocket_host(config: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = TlsAcceptor::from(config.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                if let Ok(ws) = tokio_tungstenite::accept_async(tls).await {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    drop(ws);
                }
            });
        }
    });
    port
}

/// A port nothing listens on.
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_link_with_several_addresses_connects_to_the_one_that_proves_the_pinned_certificate() {
    use roundtable::net::client::{connect_ws, connect_ws_via, ClientError};
    let (_dir, id) = identity();
    let (_other_dir, other) = identity();
    let right = websocket_host(tls::server_config(&id).unwrap()).await;
    let impostor = websocket_host(tls::server_config(&other).unwrap()).await;
    let dead = dead_port().await;
    let pin = Some(id.fingerprint.clone());
    let at = |port| ("127.0.0.1".to_string(), port);

    // The first address is dead, the second presents another certificate, the third is the host.
    let link = Link { also: vec![at(impostor), at(right)], ..Link::new("127.0.0.1", dead, "tok", pin.clone()) };
    let link = Link::parse(&link.to_string()).unwrap();
    let (_ws, via) = connect_ws_via(&link).await.expect("the address that proves the pin is kept");
    assert_eq!(via.to_string(), format!("127.0.0.1:{right}"), "and it says which one it was");

    // Alone, each wrong address fails as before, and with nothing right the first one's error is
    // what the person sees.
    let impostor_only = Link::new("127.0.0.1", impostor, "tok", pin.clone());
    assert!(matches!(connect_ws(&impostor_only).await, Err(ClientError::FingerprintMismatch { .. })));
    let nothing_right = Link { also: vec![at(impostor)], ..Link::new("127.0.0.1", dead, "tok", pin) };
    match connect_ws(&nothing_right).await {
        Err(ClientError::Connect { addr, .. }) => assert_eq!(addr, format!("127.0.0.1:{dead}")),
        other => panic!("expected the first address's connect error, got {:?}", other.map(|_| ())),
    }
}
