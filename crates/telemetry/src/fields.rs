//! Request header fields sent more than once.
//!
//! spin-sdk's `Request` keeps one value per header name, the last one sent, so the components
//! would see only the last `Authorization` of two, and only the last line of an
//! `X-Forwarded-For` written by two proxies. The entry point merges the lines first, as
//! RFC 9110 §5.3 allows for list-valued fields (joined with ", "), and refuses a request that
//! repeats a field that has one value only: which `Authorization` or `Idempotency-Key` a client
//! meant is a guess, and a proxy that checked the first while the component used the last
//! would be a way around it.

/// Fields that carry one value, never a list: sent twice, the request is refused (400).
pub const SINGLETON_FIELDS: [&str; 4] = ["authorization", "content-type", "idempotency-key", "stripe-signature"];

/// The request's header fields, one entry per name in the order of first appearance, repeated
/// lines joined with ", " (`Cookie` lines, which HTTP/2 may split, with "; ", RFC 9113 §8.2.3).
/// `Err` names (in lowercase) a [`SINGLETON_FIELDS`] field sent more than once. A `spin-*`
/// field keeps its last line only: those are the runtime's (`spin-client-addr`, the peer's
/// address, above all), and Spin appends its own after any the client sent, so an earlier line
/// is a client's forgery (joined, it would also make the address unreadable).
pub fn merge_repeated(fields: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>, &'static str> {
    let mut merged: Vec<(String, Vec<u8>)> = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match merged.iter_mut().find(|(seen, _)| seen.eq_ignore_ascii_case(&name)) {
            // (wasi:http gives field names in lowercase, as the http crate keeps them.)
            Some((_, last)) if name.starts_with("spin-") => *last = value,
            Some((_, joined)) => {
                if let Some(singleton) = SINGLETON_FIELDS.iter().find(|s| s.eq_ignore_ascii_case(&name)) {
                    return Err(singleton);
                }
                joined.extend_from_slice(if name.eq_ignore_ascii_case("cookie") { b"; " } else { b", " });
                joined.extend_from_slice(&value);
            }
            None => merged.push((name, value)),
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn list_fields_are_joined_in_order() {
        let merged = merge_repeated(fields(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("accept", "application/json"),
            ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
        ]))
        .unwrap();
        assert_eq!(merged, fields(&[("x-forwarded-for", "203.0.113.7, 10.0.0.2, 10.0.0.3"), ("accept", "application/json")]));
        let cookies = merge_repeated(fields(&[("cookie", "a=1"), ("cookie", "b=2")])).unwrap();
        assert_eq!(cookies, fields(&[("cookie", "a=1; b=2")]));
    }

    #[test]
    fn the_runtimes_spin_fields_are_their_last_lines() {
        // A client's own `spin-client-addr`, then Spin's (appended after the client's).
        let merged = merge_repeated(fields(&[("spin-client-addr", "1.2.3.4"), ("accept", "*/*"), ("spin-client-addr", "10.244.1.7:5123")])).unwrap();
        assert_eq!(merged, fields(&[("spin-client-addr", "10.244.1.7:5123"), ("accept", "*/*")]));
    }

    #[test]
    fn single_lines_pass_unchanged() {
        let one_each = fields(&[("authorization", "Bearer a"), ("content-type", "application/json"), ("idempotency-key", "k")]);
        assert_eq!(merge_repeated(one_each.clone()).unwrap(), one_each);
    }

    #[test]
    fn a_singleton_sent_twice_is_named() {
        for name in SINGLETON_FIELDS {
            let upper = name.to_ascii_uppercase();
            let twice = fields(&[(name, "a"), ("accept", "*/*"), (&upper, "b")]);
            assert_eq!(merge_repeated(twice), Err(name), "{name}");
        }
        // The same value twice is still two lines: which one counts is not the question, that a
        // client or proxy sent two is.
        assert_eq!(merge_repeated(fields(&[("authorization", "Bearer a"), ("authorization", "Bearer a")])), Err("authorization"));
    }
}
