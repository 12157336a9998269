//! Tokens: HS256 JWTs whose `sub` is the user id. The gateway issues guest
//! tokens and verifies every token it is shown; the user id of a connection
//! comes from a verified token and from nothing else.

use crate::settings::AuthSettings;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::UserId;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
}

/// Why a token was refused. The detail is for logs; clients get one code.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token rejected: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("token names an invalid user id: {0}")]
    InvalidUser(#[from] protocol::IdError),
}

/// Issues and verifies tokens with one secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    guest_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Tokens {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.issuer.clone(),
            guest_ttl: Duration::from_secs(settings.guest_token_ttl_secs),
        }
    }

    /// A token for `user`, valid for `ttl`.
    pub fn issue(&self, user: &UserId, ttl: Duration) -> Result<String, TokenError> {
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            iss: self.issuer.clone(),
            iat,
            exp: iat + ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// A new guest identity and its token.
    pub fn issue_guest(&self) -> Result<(UserId, String), TokenError> {
        let user = UserId::new_guest();
        let token = self.issue(&user, self.guest_ttl)?;
        Ok((user, token))
    }

    /// The user a token was issued to, if it is genuine and current.
    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        Ok(UserId::parse(data.claims.sub)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            jwt_secret: secret.into(),
            issuer: "switchboard".into(),
            guest_token_ttl_secs: 60,
        }
    }

    #[test]
    fn a_guest_token_verifies_to_its_user() {
        let tokens = Tokens::new(&settings("s1"));
        let (user, token) = tokens.issue_guest().unwrap();
        assert_eq!(tokens.verify(&token).unwrap(), user);
    }

    #[test]
    fn tokens_signed_with_another_secret_are_refused() {
        let (_, token) = Tokens::new(&settings("s1")).issue_guest().unwrap();
        assert!(Tokens::new(&settings("s2")).verify(&token).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = Tokens::new(&settings("s1"));
        let claims = Claims {
            sub: "alice".into(),
            iss: "switchboard".into(),
            iat: 0,
            exp: now_secs() - 120,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding)
            .unwrap();
        assert!(tokens.verify(&token).is_err());
    }

    #[test]
    fn a_genuine_token_with_an_unsafe_user_id_is_refused() {
        let tokens = Tokens::new(&settings("s1"));
        let claims = Claims {
            sub: "alice.#".into(),
            iss: "switchboard".into(),
            iat: now_secs(),
            exp: now_secs() + 60,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding)
            .unwrap();
        assert!(matches!(
            tokens.verify(&token),
            Err(TokenError::InvalidUser(_))
        ));
    }

    #[test]
    fn garbage_is_refused() {
        let tokens = Tokens::new(&settings("s1"));
        for junk in [
            "",
            "a.b.c",
            "not a token",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        ] {
            assert!(tokens.verify(junk).is_err(), "{junk:?}");
        }
    }
}
