//! `backend`: the upstream of the proxy benchmark. A bare hyper server (HTTP/1.1 and h2c) that
//! answers every request with the same small body, so the benchmark measures the proxies, not
//! the application behind them.

use std::{convert::Infallible, net::SocketAddr};

use hyper::{Response, body::Bytes, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use crate::Error;

/// The answer body: a small JSON document, typical of a service call.
const BODY: &[u8] = br#"{"service":"backend","status":"ok","items":[1,2,3,4,5,6,7,8]}"#;

pub(crate) async fn serve(listen: SocketAddr) -> Result<(), Error> {
    if !listen.ip().is_loopback() {
        return Err("the backend listens on loopback only".into());
    }
    let listener = TcpListener::bind(listen).await?;
    println!("backend listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                    Bytes::from_static(BODY),
                )))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
