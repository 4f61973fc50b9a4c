//! The live view's token: `Authorization: Bearer TOKEN`, or `?token=TOKEN` where a browser
//! cannot send a header (a WebSocket, a link). Compared in constant time; never logged.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::scenario::Secret;

/// Whether `given` is the token. Both sides are hashed first, so neither the comparison's
/// time nor its length check says anything about the token.
pub fn matches(token: &Secret, given: &str) -> bool {
    same_token(token.expose(), given)
}

/// `a == b` for secrets (the live token, the questionnaire's links): both hashed, then
/// compared in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes())
        .ct_eq(&Sha256::digest(b.as_bytes()))
        .into()
}

/// The bearer token in the headers, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// How a request stands against the configured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No (or a wrong) token.
    Denied,
}

/// Reading routes: open when no token is configured (then the server is on loopback only),
/// otherwise the token from the header or, if `allow_query`, the query.
pub fn read_access(
    token: Option<&Secret>,
    headers: &HeaderMap,
    query: Option<&str>,
    allow_query: bool,
) -> Access {
    let Some(token) = token else {
        return Access::Granted;
    };
    let given = bearer(headers).or(if allow_query { query } else { None });
    match given {
        Some(g) if matches(token, g) => Access::Granted,
        _ => Access::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn token_from_header_or_query() {
        let t = Secret::new("s3cret");
        let none = HeaderMap::new();
        assert_eq!(read_access(None, &none, None, false), Access::Granted);
        assert_eq!(
            read_access(Some(&t), &none, None, true),
            Access::Denied,
            "a token is configured: nothing given is denied"
        );
        assert_eq!(
            read_access(Some(&t), &headers("Bearer s3cret"), None, false),
            Access::Granted
        );
        assert_eq!(
            read_access(Some(&t), &headers("bearer  s3cret "), None, false),
            Access::Granted
        );
        assert_eq!(
            read_access(Some(&t), &headers("Bearer s3cre"), None, true),
            Access::Denied
        );
        assert_eq!(
            read_access(Some(&t), &headers("Basic s3cret"), None, false),
            Access::Denied
        );
        assert_eq!(
            read_access(Some(&t), &none, Some("s3cret"), true),
            Access::Granted
        );
        assert_eq!(
            read_access(Some(&t), &none, Some("s3cret"), false),
            Access::Denied,
            "the query is not accepted where only the header is"
        );
    }
}
