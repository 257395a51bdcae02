//! Outbound HTTP from a guest: `allowed_outbound_hosts` enforced (a denied request fails with
//! `HttpRequestDenied`, as in Spin), `*.spin.internal` dispatched in process (service chaining),
//! everything else sent by wasmtime-wasi-http's default client.

use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::allowed_hosts::service_chaining_target;
use crate::runtime::{App, LoadedComponent};

pub struct OutboundHooks {
    app: Arc<App>,
    component: Arc<LoadedComponent>,
}

impl OutboundHooks {
    pub fn new(app: Arc<App>, component: Arc<LoadedComponent>) -> Self {
        Self { app, component }
    }
}

type ResponseIo = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, ResponseIo), Error>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: ResponseIo,
    ) -> SendFuture {
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        let shown = format!("{scheme}://{}{}", uri.authority().map(|a| a.as_str()).unwrap_or(""), uri.path());
        if !self.component.allowed_hosts.allows(&scheme, &host, uri.port_u16()) {
            tracing::warn!(component = %self.component.id, url = %shown, "outbound request denied: not in allowed_outbound_hosts");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        if let Some(target) = service_chaining_target(&host) {
            let target = target.to_string();
            let app = self.app.clone();
            return Box::new(async move {
                let response = app.dispatch_chained(&target, request).await.map_err(|err| {
                    tracing::error!(component = %target, error = %format!("{err:#}"), "chained request failed");
                    Error::InternalError(Some(format!("chained request to `{target}` failed")))
                })?;
                Ok((response, Box::new(async { Ok(()) }) as ResponseIo))
            });
        }
        let component = self.component.id.clone();
        Box::new(async move {
            let started = std::time::Instant::now();
            let result = wasmtime_wasi_http::default_send_request(request, options).await;
            match &result {
                Ok((response, _)) => tracing::info!(%component, url = %shown, status = response.status().as_u16(), duration_ms = crate::server::millis(started), "outbound request"),
                Err(err) => tracing::warn!(%component, url = %shown, error = ?err, duration_ms = crate::server::millis(started), "outbound request failed"),
            }
            let (response, io) = result?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as ResponseIo))
        })
    }
}
