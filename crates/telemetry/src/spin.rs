//! The components' entry point on Spin's wasi:http handler (feature `spin`).
//!
//! spin-sdk's `#[http_component]` on a `fn(Request) -> Response` writes a plain-text line to
//! stderr when the response cannot be delivered (the caller went away: a client that
//! disconnected, a chained call that timed out), which breaks the one-JSON-object-per-line log.
//! [`serve`] does the same conversion and delivery, and logs that case as a JSON `WARN` line with
//! the request's id.

use spin_sdk::http::conversions::TryFromIncomingRequest as _;
use spin_sdk::http::{IncomingRequest, OutgoingResponse, Request, Response, ResponseOutparam};

/// Reads the request, answers it with `handle`, and delivers the answer. A request whose body
/// cannot be read (the client went away mid-upload) is logged and answered with
/// `unreadable_body` (the component's 400 problem), where the SDK would answer a plain-text 500
/// and write plain text to stderr.
pub async fn serve(
    component: &'static str,
    request: IncomingRequest,
    response_out: ResponseOutparam,
    handle: fn(Request) -> Response,
    unreadable_body: fn() -> Response,
) {
    let method = request.method().to_string();
    let path = request.path_with_query().unwrap_or_default();
    // Read now, while the request is ours (the ids are needed only if the body cannot be read).
    // The headers handle is dropped before the request is consumed, as wasi:http requires.
    let (x_request_id, traceparent) = {
        let headers = request.headers();
        let first = |name: &str| headers.get(name).into_iter().next().and_then(|value| String::from_utf8(value).ok());
        (first(crate::REQUEST_ID_HEADER), first(crate::TRACEPARENT_HEADER))
    };
    let response = match Request::try_from_incoming_request(request).await {
        Ok(request) => handle(request),
        Err(err) => {
            let request_id = crate::start(component, x_request_id.as_deref(), traceparent.as_deref());
            crate::warn(
                "request body not read",
                &[("method", method.as_str().into()), ("path", crate::path_of(&path).into()), ("cause", err.to_string().into())],
            );
            let mut response = unreadable_body();
            response.set_header(crate::REQUEST_ID_HEADER, request_id);
            crate::finish(&method, *response.status());
            response
        }
    };
    deliver(response_out, response).await;
}

async fn deliver(response_out: ResponseOutparam, mut response: Response) {
    let body = std::mem::take(response.body_mut());
    match OutgoingResponse::try_from(response) {
        Ok(outgoing) => {
            if let Err(err) = response_out.set_with_body(outgoing, body).await {
                crate::warn("response not delivered: the caller went away", &[("cause", err.to_string().into())]);
            }
        }
        Err(err) => crate::error("response not built", &[("cause", err.to_string().into())]),
    }
}
