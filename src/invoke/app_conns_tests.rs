//! `AppConnections` against a real local HTTP/1.1 server that counts its connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A server answering each request on a connection with `answer`, counting accepted connections;
/// with `close_after_one`, it closes each connection after its first answer, without saying so.
async fn server(answer: &'static [u8], close_after_one: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // Requests here have no body: each ends with an empty line.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                        if close_after_one {
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

async fn read(resp: Response<Body>) -> String {
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn a_connection_is_reused_once_its_answer_is_read() {
    let (addr, accepted) = server(OK, false).await;
    let conns = AppConnections::new(addr);
    for _ in 0..5 {
        let resp = conns.send(get("/a"), None).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(read(resp).await, "ok");
        assert_eq!(conns.idle_count(), 1, "back in the idle set");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for five calls in a row");
}

#[tokio::test]
async fn calls_in_parallel_each_get_a_connection_and_all_come_back() {
    let (addr, accepted) = server(OK, false).await;
    let conns = AppConnections::new(addr);
    let (a, b, c) = tokio::join!(conns.send(get("/1"), None), conns.send(get("/2"), None), conns.send(get("/3"), None));
    // None is read yet: all three connections are busy.
    assert_eq!(conns.idle_count(), 0);
    for r in [a, b, c] {
        assert_eq!(read(r.unwrap()).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(conns.idle_count(), 3);
}

#[tokio::test]
async fn an_answer_dropped_part_way_does_not_give_its_connection_back() {
    // The app promises 10 bytes and sends 2: the body is never complete.
    let (addr, accepted) = server(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok", false).await;
    let conns = AppConnections::new(addr);
    let resp = conns.send(get("/a"), None).await.unwrap();
    drop(resp);
    assert_eq!(conns.idle_count(), 0, "a connection with an unread answer is not reused");
    let _second = conns.send(get("/b"), None).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_app_that_closes_idle_connections_costs_no_failed_call() {
    let (addr, accepted) = server(OK, true).await;
    let conns = AppConnections::new(addr);
    for i in 0..5 {
        let resp = conns.send(get("/a"), None).await.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(read(resp).await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5, "a new connection each time the app closed the last");
}

#[tokio::test]
async fn an_empty_answer_gives_its_connection_back_when_dropped() {
    let (addr, accepted) = server(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
    let conns = AppConnections::new(addr);
    for _ in 0..3 {
        let resp = conns.send(get("/a"), None).await.unwrap();
        assert_eq!(resp.status(), 204);
        drop(resp);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_permit_is_held_until_the_answer_is_dropped() {
    let (addr, _) = server(OK, false).await;
    let conns = AppConnections::new(addr);
    let sem = Arc::new(tokio::sync::Semaphore::new(1));
    let resp = conns.send(get("/a"), Arc::clone(&sem).try_acquire_owned().ok()).await.unwrap();
    assert_eq!(resp.body().size_hint().exact(), Some(2), "the known length is kept");
    assert_eq!(sem.available_permits(), 0);
    assert_eq!(read(resp).await, "ok");
    assert_eq!(sem.available_permits(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let conns = AppConnections::new(addr.clone());
    match conns.send(get("/a"), None).await {
        Err(AppConnError::Connect { addr: a, .. }) => assert_eq!(a, addr),
        other => panic!("expected a connect error, got {other:?}"),
    }
}
