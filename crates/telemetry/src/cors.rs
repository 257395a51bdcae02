//! Cross-origin access from browsers (CORS), for both components: which origins may call the
//! API from a web page, and the headers that say so. Off unless the `cors_allowed_origins`
//! variable lists origins. Tokens travel in `Authorization`, never in cookies, so no answer
//! allows credentials.

/// The component variable (mapped from the app's `cors_allowed_origins` in spin.toml).
pub const VARIABLE: &str = "cors_allowed_origins";

/// Methods a preflight may be allowed (the routes themselves still answer 405 to the others).
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

/// Request headers a page may send: the token, the body's type, our own idempotency and request
/// ids, and W3C trace context.
pub const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id, traceparent";

/// Response headers a page may read beyond the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str = "location, retry-after, x-request-id, idempotent-replayed, allow, www-authenticate";

/// How long a browser may keep a preflight's answer, in seconds.
pub const MAX_AGE_SECS: u32 = 600;

/// The origins allowed to call from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (`*`): for a public API whose every call carries its own token.
    Any,
    /// Exactly these (`scheme://host[:port]`, compared as browsers send them, lower case).
    Listed(Vec<String>),
}

impl AllowedOrigins {
    /// A comma-separated list of origins, or `*`; empty means none. An entry that is not an
    /// origin (a path, a wildcard inside a host, another scheme) is an error that names it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let entries: Vec<&str> = raw.split(',').map(str::trim).filter(|entry| !entry.is_empty()).collect();
        if entries == ["*"] {
            return Ok(Self::Any);
        }
        let mut origins = Vec::with_capacity(entries.len());
        for (position, entry) in entries.iter().enumerate() {
            let origin = parse_origin(entry).ok_or_else(|| {
                format!("entry {} is not an origin (scheme://host[:port], http or https, no path; or * alone)", position + 1)
            })?;
            origins.push(origin);
        }
        Ok(Self::Listed(origins))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    pub fn allow_origin(&self, origin: &str) -> Option<String> {
        match self {
            Self::Any => Some("*".to_string()),
            Self::Listed(origins) => {
                let origin = origin.trim().to_ascii_lowercase();
                origins.contains(&origin).then_some(origin)
            }
        }
    }
}

/// `scheme://host[:port]` in lower case, or `None`.
fn parse_origin(entry: &str) -> Option<String> {
    let lower = entry.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return None;
    }
    // An IPv6 host is bracketed and may hold colons; any other host holds none.
    let (host, port) = match rest.find(']') {
        Some(end) if rest.starts_with('[') => match &rest[end + 1..] {
            "" => (&rest[..=end], None),
            after => (&rest[..=end], Some(after.strip_prefix(':')?)),
        },
        _ => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.split('.').all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|p| p > 0) && !port.starts_with('0'));
    (host_ok && port_ok).then_some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_allow_exact_origins_only() {
        let allowed = AllowedOrigins::parse(" https://app.example.com, http://localhost:5173 ").unwrap();
        assert_eq!(allowed.allow_origin("https://app.example.com").as_deref(), Some("https://app.example.com"));
        assert_eq!(allowed.allow_origin("HTTPS://APP.example.com").as_deref(), Some("https://app.example.com"));
        assert_eq!(allowed.allow_origin("http://localhost:5173").as_deref(), Some("http://localhost:5173"));
        for refused in ["https://app.example.com.evil.org", "http://app.example.com", "https://example.com", "null", "", "http://localhost:5174"] {
            assert_eq!(allowed.allow_origin(refused), None, "{refused}");
        }
        assert_eq!(AllowedOrigins::parse("*").unwrap().allow_origin("https://any.example").as_deref(), Some("*"));
        assert_eq!(AllowedOrigins::parse("").unwrap(), AllowedOrigins::Listed(Vec::new()));
        assert_eq!(AllowedOrigins::parse(" , ").unwrap().allow_origin("https://app.example.com"), None);
        assert!(AllowedOrigins::parse("http://[::1]:8080").unwrap().allow_origin("http://[::1]:8080").is_some());
        assert!(AllowedOrigins::parse("http://[::1]").unwrap().allow_origin("http://[::1]").is_some());
    }

    #[test]
    fn entries_that_are_not_origins_are_refused_by_position() {
        for bad in ["app.example.com", "https://app.example.com/", "https://*.example.com", "ftp://example.com", "https://", "https://a..b", "http://host:0", "http://host:99999", "http://host:1:2", "http://[::1]x", "http://[zz]", "*, https://a.example"] {
            let err = AllowedOrigins::parse(&format!("https://ok.example,{bad}")).unwrap_err();
            assert!(err.starts_with("entry 2 "), "{bad}: {err}");
        }
    }
}
