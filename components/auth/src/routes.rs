//! The route table: every (method, path) the component serves. `openapi/auth.yaml` describes
//! exactly these (a unit test below and `tests/auth_openapi.rs` check both directions).

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Jwks,
    Register,
    Login,
    Refresh,
    Logout,
    Me,
    UpdateMe,
    DeleteMe,
    ChangePassword,
    Batch,
    User,
    Sessions,
    RevokeSession,
    IssuePasswordReset,
    ResetPassword,
    IssueEmailVerification,
    VerifyEmail,
    EnrollTotp,
    ConfirmTotp,
    RemoveTotp,
}

/// (method, path template, endpoint). `{id}` matches one path segment.
pub const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", "/api/v3/auth/health", Endpoint::Health),
    ("GET", "/.well-known/jwks.json", Endpoint::Jwks),
    ("POST", "/api/v3/auth/register", Endpoint::Register),
    ("POST", "/api/v3/auth/login", Endpoint::Login),
    ("POST", "/api/v3/auth/refresh", Endpoint::Refresh),
    ("POST", "/api/v3/auth/logout", Endpoint::Logout),
    ("POST", "/api/v3/auth/password-reset", Endpoint::ResetPassword),
    ("POST", "/api/v3/auth/email-verification", Endpoint::VerifyEmail),
    ("GET", "/api/v3/users/me", Endpoint::Me),
    ("PATCH", "/api/v3/users/me", Endpoint::UpdateMe),
    ("DELETE", "/api/v3/users/me", Endpoint::DeleteMe),
    ("PUT", "/api/v3/users/me/password", Endpoint::ChangePassword),
    ("GET", "/api/v3/users/me/sessions", Endpoint::Sessions),
    ("DELETE", "/api/v3/users/me/sessions/{id}", Endpoint::RevokeSession),
    ("POST", "/api/v3/users/me/mfa/totp", Endpoint::EnrollTotp),
    ("DELETE", "/api/v3/users/me/mfa/totp", Endpoint::RemoveTotp),
    ("POST", "/api/v3/users/me/mfa/totp/confirm", Endpoint::ConfirmTotp),
    ("POST", "/api/v3/users/batch", Endpoint::Batch),
    ("POST", "/api/v3/users/password-resets", Endpoint::IssuePasswordReset),
    ("POST", "/api/v3/users/email-verifications", Endpoint::IssueEmailVerification),
    ("GET", "/api/v3/users/{id}", Endpoint::User),
];

/// Finds the endpoint for a request; literal paths win over `{id}` (so `GET /users/batch` is
/// 405, not a read of user "batch"). Unknown path: 404; known path, other method: 405 + Allow.
/// `HEAD` is served wherever `GET` is (uptime monitors probe with it; the host sends no body).
pub fn resolve(method: &str, path: &str) -> Result<(Endpoint, Option<String>), Error> {
    let literal: Vec<&(&str, &str, Endpoint)> = ROUTES.iter().filter(|(_, template, _)| *template == path).collect();
    let (candidates, id) = if literal.is_empty() {
        let mut id = None;
        let templated: Vec<&(&str, &str, Endpoint)> = ROUTES
            .iter()
            .filter(|(_, template, _)| match match_template(template, path) {
                Some(value) => {
                    id = Some(value);
                    true
                }
                None => false,
            })
            .collect();
        (templated, id)
    } else {
        (literal, None)
    };
    if candidates.is_empty() {
        return Err(Error::RouteNotFound);
    }
    let method = if method == "HEAD" { "GET" } else { method };
    match candidates.iter().find(|(m, _, _)| *m == method) {
        Some((_, _, endpoint)) => Ok((*endpoint, id)),
        None => Err(Error::MethodNotAllowed { allow: allow(candidates.first().map_or("", |(_, t, _)| *t)) }),
    }
}

/// The `Allow` value of a path template.
fn allow(template: &str) -> &'static str {
    match template {
        "/api/v3/users/me" => "GET, HEAD, PATCH, DELETE",
        "/api/v3/users/me/password" => "PUT",
        "/api/v3/users/me/sessions/{id}" => "DELETE",
        "/api/v3/users/me/mfa/totp" => "POST, DELETE",
        "/api/v3/users/{id}" | "/api/v3/users/me/sessions" | "/api/v3/auth/health" | "/.well-known/jwks.json" => "GET, HEAD",
        _ => "POST",
    }
}

/// The decoded `{id}` segment when `path` fits `template`.
fn match_template(template: &str, path: &str) -> Option<String> {
    let (prefix, suffix) = template.split_once("{id}")?;
    let segment = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    percent_decode(segment)
}

/// RFC 3986 percent-decoding of one segment; `None` for bad escapes or non-UTF-8 results.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_route_and_refuses_the_rest() {
        for (method, template, endpoint) in ROUTES {
            let path = template.replace("{id}", "0190-abc");
            let (found, id) = resolve(method, &path).expect("served");
            assert_eq!(found, *endpoint, "{method} {path}");
            assert_eq!(id.is_some(), template.contains("{id}"));
        }
        assert_eq!(resolve("GET", "/api/v3/users/batch").unwrap_err(), Error::MethodNotAllowed { allow: "POST" });
        assert_eq!(resolve("POST", "/api/v3/users/me").unwrap_err(), Error::MethodNotAllowed { allow: "GET, HEAD, PATCH, DELETE" });
        assert_eq!(resolve("DELETE", "/api/v3/users/x").unwrap_err(), Error::MethodNotAllowed { allow: "GET, HEAD" });
        assert_eq!(resolve("HEAD", "/api/v3/auth/health").expect("served").0, Endpoint::Health);
        assert_eq!(resolve("HEAD", "/api/v3/auth/login").unwrap_err(), Error::MethodNotAllowed { allow: "POST" });
        assert_eq!(resolve("GET", "/api/v3/auth/nope").unwrap_err(), Error::RouteNotFound);
        assert_eq!(resolve("GET", "/api/v3/users/a/b").unwrap_err(), Error::RouteNotFound);
        assert_eq!(resolve("GET", "/api/v3/users/").unwrap_err(), Error::RouteNotFound);
        assert_eq!(resolve("GET", "/api/v3/users/legacy%2042").expect("ok").1.as_deref(), Some("legacy 42"));
        assert_eq!(resolve("GET", "/api/v3/users/%ff").unwrap_err(), Error::RouteNotFound);
    }

    /// Every route is in openapi/auth.yaml and every operation there is a route.
    #[test]
    fn the_openapi_document_describes_exactly_these_routes() {
        let yaml = include_str!("../../../openapi/auth.yaml");
        let mut documented = openapi_operations(yaml);
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES.iter().map(|(m, t, _)| (m.to_string(), t.to_string())).collect();
        served.sort();
        assert_eq!(documented, served);
    }

    /// (METHOD, path) pairs under `paths:` (paths at two spaces of indentation, methods at four).
    pub(crate) fn openapi_operations(yaml: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut in_paths = false;
        let mut path: Option<String> = None;
        for line in yaml.lines() {
            if !line.starts_with(' ') && !line.trim().is_empty() {
                in_paths = line.trim_end() == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(rest) = line.strip_prefix("  ").filter(|r| !r.starts_with(' ')) {
                path = rest.trim_end().strip_suffix(':').map(|p| p.trim_matches(|c| c == '"' || c == '\'').to_string());
            } else if let Some(rest) = line.strip_prefix("    ").filter(|r| !r.starts_with(' ')) {
                let key = rest.trim_end().trim_end_matches(':');
                if let Some(p) = path.as_ref().filter(|_| ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&key)) {
                    out.push((key.to_ascii_uppercase(), p.clone()));
                }
            }
        }
        out
    }
}
