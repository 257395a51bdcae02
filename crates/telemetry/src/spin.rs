//! The components' entry point on Spin's wasi:http handler (feature `spin`).
//!
//! spin-sdk's `#[http_component]` on a `fn(Request) -> Response` writes a plain-text line to
//! stderr when the response cannot be delivered (the caller went away: a client that
//! disconnected, a chained call that timed out), which breaks the one-JSON-object-per-line log.
//! [`serve`] does the same conversion and delivery, and logs that case as a JSON `WARN` line with
//! the request's id.

use spin_sdk::http::conversions::TryFromIncomingRequest as _;
use spin_sdk::http::{IncomingRequest, IntoResponse as _, OutgoingResponse, Request, Response, ResponseOutparam};

/// Reads the request, answers it with `handle`, and delivers the answer.
pub async fn serve(request: IncomingRequest, response_out: ResponseOutparam, handle: fn(Request) -> Response) {
    let response = match Request::try_from_incoming_request(request).await {
        Ok(request) => handle(request),
        // The body could not be read: the SDK's own answer to that (a 500).
        Err(err) => err.into_response(),
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
