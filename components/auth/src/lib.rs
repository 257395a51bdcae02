//! The auth component: identity (name, encrypted email, password), tokens, and the user reads
//! the customer component makes.
//!
//! Layers: `lib.rs` routes (this file, the only one besides `config::Spin` and `store::mysql`
//! that touches `spin_sdk`) → `api` (request parts → validated values, JSON views) → `domain`
//! (rules, behind the `domain::ports::Store` trait) → `store::mysql` (SQL). Every error becomes
//! problem+json in `error`.

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod fresh_pages;
pub mod routes;
pub mod store;

use spin_sdk::http::{Method, Request, Response};

use api::{Incoming, Reply};
use config::Spin;
use error::Error;
use routes::Endpoint;

// The export exists only in the component: natively, the `wasi:http/...` symbol name breaks the
// cdylib's linker version script, and `cargo test -p auth` needs the crate to link. It reads the
// request, answers it with `handle`, and logs an answer the caller never took as a JSON line.
#[cfg(target_arch = "wasm32")]
#[spin_sdk::http_component]
async fn serve(request: spin_sdk::http::IncomingRequest, response_out: spin_sdk::http::ResponseOutparam) {
    let bodies = telemetry::spin::Bodies { max: api::MAX_BODY_BYTES, too_large: body_too_large, unreadable: unreadable_body };
    telemetry::spin::serve("auth", request, response_out, handle, bodies).await;
}

/// The answer to a body over 64 KiB, refused before it is read to its end.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn body_too_large() -> Response {
    let rendered = Error::PayloadTooLarge.render();
    respond(rendered.status, rendered.headers, Some(rendered.body))
}

/// The answer to a request whose body could not be read (the client went away mid-upload).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn unreadable_body() -> Response {
    let rendered = Error::UnreadableBody.render();
    respond(rendered.status, rendered.headers, Some(rendered.body))
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn handle(request: Request) -> Response {
    // The request id (taken from x-request-id or traceparent, or new) is echoed on every answer,
    // carried in every problem body and in every log line of this request.
    let header = |name: &str| request.header(name).and_then(|value| value.as_str());
    let request_id = telemetry::start("auth", header(telemetry::REQUEST_ID_HEADER), header(telemetry::TRACEPARENT_HEADER));
    let method = method_name(request.method());
    let result = routes::resolve(method, request.path()).and_then(|(endpoint, id)| {
        if let Some((_, template, _)) = routes::ROUTES.iter().find(|(_, _, e)| *e == endpoint) {
            telemetry::set_route(template);
        }
        dispatch(&request, endpoint, id.as_deref())
    });
    let (status, mut headers, body) = match result {
        Ok(reply) => (reply.status, reply.headers, reply.body),
        Err(err) => {
            let rendered = err.render();
            (rendered.status, rendered.headers, Some(rendered.body))
        }
    };
    headers.push((telemetry::REQUEST_ID_HEADER, request_id));
    let response = respond(status, headers, body);
    telemetry::finish(method, status);
    response
}

fn dispatch(request: &Request, endpoint: Endpoint, id: Option<&str>) -> Result<Reply, Error> {
    let (now, now_ms) = domain::time::now();
    let header = |name: &str| request.header(name).and_then(|value| value.as_str());
    let source = Spin;
    let incoming = Incoming {
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: request.body(),
        ctx: domain::Ctx {
            now,
            now_ms,
            client_addr: api::client_addr(&source, header("spin-client-addr"), header("x-forwarded-for"))?,
            user_agent: domain::Ctx::user_agent_from(header("user-agent")),
        },
    };
    match endpoint {
        Endpoint::Health => api::health(&source),
        Endpoint::Jwks => api::jwks(&source),
        Endpoint::Register => api::register(&source, &incoming),
        Endpoint::Login => api::login(&source, &incoming),
        Endpoint::Refresh => api::refresh(&source, &incoming),
        Endpoint::Logout => api::logout(&source, &incoming),
        Endpoint::Me => api::me(&source, &incoming),
        Endpoint::UpdateMe => api::update_me(&source, &incoming),
        Endpoint::DeleteMe => api::delete_me(&source, &incoming),
        Endpoint::ChangePassword => api::change_password(&source, &incoming),
        Endpoint::Batch => api::batch_users(&source, &incoming),
        Endpoint::User => api::get_user(&source, &incoming, id.unwrap_or_default()),
        Endpoint::Sessions => api::sessions(&source, &incoming),
        Endpoint::RevokeSession => api::revoke_session(&source, &incoming, id.unwrap_or_default()),
        Endpoint::IssuePasswordReset => api::issue_password_reset(&source, &incoming),
        Endpoint::ResetPassword => api::reset_password(&source, &incoming),
        Endpoint::IssueEmailVerification => api::issue_email_verification(&source, &incoming),
        Endpoint::VerifyEmail => api::verify_email(&source, &incoming),
        Endpoint::EnrollTotp => api::enroll_totp(&source, &incoming),
        Endpoint::ConfirmTotp => api::confirm_totp(&source, &incoming),
        Endpoint::RemoveTotp => api::remove_totp(&source, &incoming),
    }
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

fn respond(status: u16, headers: Vec<(&'static str, String)>, body: Option<String>) -> Response {
    let mut builder = Response::builder();
    builder.status(status);
    for (name, value) in headers {
        builder.header(name, value);
    }
    builder.body(body.unwrap_or_default()).build()
}
