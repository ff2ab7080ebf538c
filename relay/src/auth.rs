//! Bearer tokens: HS256 JWTs whose `test_ids` claim lists the tests a client may follow
//! ("*" for all) and whose `exp` ends the connection.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Claims {
    test_ids: Vec<String>,
    exp: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    all: bool,
    test_ids: Vec<String>,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Grant {
    pub fn allows(&self, test_id: &str) -> bool {
        self.all || self.test_ids.iter().any(|t| t == test_id)
    }

    pub fn allows_all(&self) -> bool {
        self.all
    }

    /// The names the token lists, or `None` when it grants all (`"*"`).
    pub fn names(&self) -> Option<&[String]> {
        (!self.all).then_some(self.test_ids.as_slice())
    }
}

/// The token of an `Authorization` header's value: the `Bearer` scheme, its name matched
/// without regard to case (RFC 7235 2.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
}

/// The bearer token of a request's `Authorization` header, if it has one.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer)
}

/// What a token must satisfy beyond its signature and `exp`/`nbf`, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `iss` must be this (RFC 7519 4.1.1).
    pub issuer: Option<String>,
    /// `aud` must contain this (RFC 7519 4.1.3).
    pub audience: Option<String>,
    /// `exp` at most this many seconds ahead: no token valid for longer is accepted.
    pub max_lifetime_seconds: Option<u64>,
}

pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime_seconds: Option<u64>,
}

impl Verifier {
    pub fn new(secret: &str, policy: &Policy) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // A token whose nbf ("not before", RFC 7519 4.1.5) lies ahead is not valid yet.
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &policy.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &policy.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // No audience configured: a token's aud is not checked.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Verifier { key: DecodingKey::from_secret(secret.as_bytes()), validation, max_lifetime_seconds: policy.max_lifetime_seconds }
    }

    /// The grant of a token, or why it is refused.
    pub fn verify(&self, token: Option<&str>) -> Result<Grant, String> {
        let token = token.filter(|t| !t.is_empty()).ok_or("no bearer token (Authorization header or ?token=)")?;
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "token signature invalid".to_string(),
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_string(),
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => "token issuer (iss) is not the expected one".to_string(),
            jsonwebtoken::errors::ErrorKind::InvalidAudience => "token audience (aud) is not the expected one".to_string(),
            _ => format!("token invalid: {e}"),
        })?;
        let claims = data.claims;
        if let Some(max) = self.max_lifetime_seconds {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if claims.exp > now.saturating_add(max) {
                return Err(format!("token valid for longer than {max} s (--token-max-lifetime-seconds): ask for a shorter one"));
            }
        }
        Ok(Grant { all: claims.test_ids.iter().any(|t| t == "*"), test_ids: claims.test_ids, expires_at: claims.exp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn later() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600
    }

    #[test]
    fn scope_comes_from_the_claim() {
        let v = Verifier::new("0123456789abcdef", &Policy::default());
        let g = v.verify(Some(&token("0123456789abcdef", serde_json::json!({"test_ids": ["a"], "exp": later()})))).unwrap();
        assert!(g.allows("a") && !g.allows("b") && !g.allows_all());
        let g = v.verify(Some(&token("0123456789abcdef", serde_json::json!({"test_ids": ["*"], "exp": later()})))).unwrap();
        assert!(g.allows("anything") && g.allows_all());
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let v = Verifier::new("0123456789abcdef", &Policy::default());
        assert!(v.verify(None).unwrap_err().contains("no bearer token"));
        let wrong = token("another-secret-16", serde_json::json!({"test_ids": ["a"], "exp": later()}));
        assert_eq!(v.verify(Some(&wrong)).unwrap_err(), "token signature invalid");
        let old = token("0123456789abcdef", serde_json::json!({"test_ids": ["a"], "exp": 1000}));
        assert_eq!(v.verify(Some(&old)).unwrap_err(), "token expired");
        let early = token("0123456789abcdef", serde_json::json!({"test_ids": ["a"], "exp": later() + 3600, "nbf": later()}));
        assert_eq!(v.verify(Some(&early)).unwrap_err(), "token not valid yet (nbf)");
        let started = token("0123456789abcdef", serde_json::json!({"test_ids": ["a"], "exp": later(), "nbf": 1000}));
        assert!(v.verify(Some(&started)).is_ok());
        let no_scope = token("0123456789abcdef", serde_json::json!({"exp": later()}));
        assert!(v.verify(Some(&no_scope)).unwrap_err().contains("test_ids"));
        // Without a configured audience, a token's aud is not checked.
        assert!(v.verify(Some(&token("0123456789abcdef", serde_json::json!({"test_ids": ["a"], "exp": later(), "aud": "x"})))).is_ok());
    }

    #[test]
    fn issuer_audience_and_lifetime_are_enforced_when_set() {
        let policy = Policy { issuer: Some("api".into()), audience: Some("relay".into()), max_lifetime_seconds: Some(900) };
        let v = Verifier::new("0123456789abcdef", &policy);
        let sign = |claims: serde_json::Value| token("0123456789abcdef", claims);
        assert!(v.verify(Some(&sign(serde_json::json!({"test_ids": ["a"], "exp": later(), "iss": "api", "aud": "relay"})))).is_ok());
        assert!(v.verify(Some(&sign(serde_json::json!({"test_ids": ["a"], "exp": later(), "iss": "api", "aud": ["relay", "other"]})))).is_ok());
        assert_eq!(v.verify(Some(&sign(serde_json::json!({"test_ids": ["a"], "exp": later(), "iss": "evil", "aud": "relay"})))).unwrap_err(),
                   "token issuer (iss) is not the expected one");
        assert_eq!(v.verify(Some(&sign(serde_json::json!({"test_ids": ["a"], "exp": later(), "iss": "api", "aud": "other"})))).unwrap_err(),
                   "token audience (aud) is not the expected one");
        assert!(v.verify(Some(&sign(serde_json::json!({"test_ids": ["a"], "exp": later(), "aud": "relay"})))).unwrap_err().contains("iss"));
        assert!(v.verify(Some(&sign(serde_json::json!({"test_ids": ["a"], "exp": later(), "iss": "api"})))).unwrap_err().contains("aud"));
        let long = sign(serde_json::json!({"test_ids": ["a"], "exp": later() + 3600, "iss": "api", "aud": "relay"}));
        assert!(v.verify(Some(&long)).unwrap_err().contains("longer than 900 s"));
    }
}
