//! The HTTP listener: one connection task per client, one fresh instance per request, one log
//! line per request (component, method, path, status, duration; never headers or bodies).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::runtime::{App, ResponseResult, host_response};

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, client_addr) = tokio::select! {
            accepted = listener.accept() => accepted.context("Failed to accept a connection")?,
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(app, request, client_addr).await) }
            });
            if let Err(err) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%client_addr, error = %err, "connection closed with an error");
            }
        });
    }
}

/// The single request path: route, dispatch, log. Tests may call it without a socket.
pub async fn handle(
    app: Arc<App>,
    request: hyper::Request<hyper::body::Incoming>,
    client_addr: SocketAddr,
) -> hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let Some(route) = app.route(&path) else {
        tracing::info!(component = "-", %method, %path, status = 404, duration_ms = millis(started), "request");
        return host_response(404, "Not Found");
    };
    let component = route.component.clone();
    let result = app.dispatch(route, request, client_addr).await;
    log_request(&component, &method, &path, &result, started, false);
    match result {
        Ok(response) => response,
        Err(_) => host_response(500, "Internal Server Error"),
    }
}

/// Milliseconds since `started`, to the microsecond.
pub fn millis(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub fn log_request(component: &str, method: &http::Method, path: &str, result: &ResponseResult, started: Instant, chained: bool) {
    let duration_ms = millis(started);
    match result {
        Ok(response) => {
            // Components echo the request id they used (x-request-id); logging it lets a
            // client's problem+json report be matched to this line.
            let request_id = response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info!(
                %component, %method, %path, status = response.status().as_u16(), duration_ms, chained, request_id, "request"
            )
        }
        Err(err) => tracing::error!(
            %component, %method, %path, status = 500, duration_ms, chained, error = %format!("{err:#}"), "request failed"
        ),
    }
}
