//! Tokens: HS256 JWTs whose `sub` is the user id. The gateway issues guest
//! tokens and verifies every token it is shown; the user id of a connection
//! comes from a verified token and from nothing else. Any system holding the
//! secret can mint tokens (`sub`, `exp`, and `iss`/`aud` when configured), so
//! an application plugs in its own login by issuing them.
//!
//! Tokens are never logged.

use crate::settings::AuthSettings;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::{RoomId, UserId};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    /// Informational; tokens from other issuers may leave it out.
    #[serde(default)]
    iat: u64,
    exp: u64,
}

/// `purpose` of a room invitation.
const INVITE_PURPOSE: &str = "switchboard-room-invite";

#[derive(Debug, Serialize, Deserialize)]
struct InviteClaims {
    room: String,
    purpose: String,
    iat: u64,
    exp: u64,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Why a token was refused. The detail is for logs; clients get one code.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token rejected: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("token names an invalid id: {0}")]
    InvalidUser(#[from] protocol::IdError),
    #[error("not a room invitation")]
    NotAnInvite,
    /// The token's header names extensions (`crit`) the verifier must
    /// understand; it understands none (RFC 7515 §4.1.11).
    #[error("the token asks for extensions this gateway does not understand (crit)")]
    CriticalExtension,
}

/// Refuses a token whose header carries `crit`: its issuer requires the
/// verifier to understand extensions, and this one understands none.
fn refuse_critical(token: &str) -> Result<(), TokenError> {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return Ok(()); // not ours to judge: the signature check refuses it
    };
    let critical = serde_json::from_slice::<serde_json::Value>(&json)
        .ok()
        .is_some_and(|header| header.get("crit").is_some());
    if critical {
        return Err(TokenError::CriticalExtension);
    }
    Ok(())
}

/// Issues and verifies tokens with one secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    guest_ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Tokens {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.as_bytes();
        let configured = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        let issuer = configured(&settings.issuer);
        let audience = configured(&settings.audience);
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        // A token not yet valid is refused like an expired one.
        validation.validate_nbf = true;
        // Clocks of token issuers and gateways differ a little.
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer,
            audience,
            guest_ttl: Duration::from_secs(settings.guest_token_ttl_secs),
        }
    }

    /// A token for `user`, valid for `ttl`.
    pub fn issue(&self, user: &UserId, ttl: Duration) -> Result<String, TokenError> {
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + ttl.as_secs(),
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &impl Serialize) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// A new guest identity and its token.
    pub fn issue_guest(&self) -> Result<(UserId, String), TokenError> {
        let user = UserId::new_guest();
        let token = self.issue(&user, self.guest_ttl)?;
        Ok((user, token))
    }

    /// An invitation to `room`, valid for `ttl`: whoever holds it may join
    /// (like the per-room chat tokens of the NestJS design). Signed with the
    /// same secret, so every gateway accepts it; it cannot pass for a user
    /// token (no `sub`) nor a user token for it (no `room`).
    pub fn issue_room_invite(&self, room: RoomId, ttl: Duration) -> Result<String, TokenError> {
        let iat = now_secs();
        let claims = InviteClaims {
            room: room.to_string(),
            purpose: INVITE_PURPOSE.into(),
            iat,
            exp: iat + ttl.as_secs(),
        };
        self.sign(&claims)
    }

    /// The room an invitation is for, if it is genuine and current.
    pub fn verify_room_invite(&self, token: &str) -> Result<RoomId, TokenError> {
        refuse_critical(token)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<InviteClaims>(token, &self.decoding, &validation)?;
        if data.claims.purpose != INVITE_PURPOSE {
            return Err(TokenError::NotAnInvite);
        }
        Ok(RoomId::parse(&data.claims.room)?)
    }

    /// The user a token was issued to, if it is genuine and current.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        refuse_critical(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        Ok(Verified {
            user: UserId::parse(data.claims.sub)?,
            expires_at: data.claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            jwt_secret: secret.into(),
            issuer: "switchboard".into(),
            audience: String::new(),
            guest_sessions: true,
            guest_token_ttl_secs: 60,
        }
    }

    fn mint(tokens: &Tokens, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &tokens.encoding).unwrap()
    }

    fn claims(sub: &str, iss: Option<&str>, aud: Option<&str>) -> Claims {
        Claims {
            sub: sub.into(),
            iss: iss.map(Into::into),
            aud: aud.map(Into::into),
            iat: now_secs(),
            exp: now_secs() + 60,
        }
    }

    #[test]
    fn a_guest_token_verifies_to_its_user() {
        let tokens = Tokens::new(&settings("s1"));
        let (user, token) = tokens.issue_guest().unwrap();
        let verified = tokens.verify(&token).unwrap();
        assert_eq!(verified.user, user);
        assert!(verified.expires_at > now_secs());
    }

    #[test]
    fn tokens_signed_with_another_secret_are_refused() {
        let (_, token) = Tokens::new(&settings("s1")).issue_guest().unwrap();
        assert!(Tokens::new(&settings("s2")).verify(&token).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = Tokens::new(&settings("s1"));
        let expired = Claims {
            exp: now_secs() - 120,
            ..claims("alice", Some("switchboard"), None)
        };
        assert!(tokens.verify(&mint(&tokens, &expired)).is_err());
    }

    #[test]
    fn a_genuine_token_with_an_unsafe_user_id_is_refused() {
        let tokens = Tokens::new(&settings("s1"));
        let token = mint(&tokens, &claims("alice.#", Some("switchboard"), None));
        assert!(matches!(
            tokens.verify(&token),
            Err(TokenError::InvalidUser(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let tokens = Tokens::new(&settings("s1"));
        assert!(
            tokens
                .verify(&mint(&tokens, &claims("a", Some("switchboard"), None)))
                .is_ok()
        );
        assert!(
            tokens
                .verify(&mint(&tokens, &claims("a", Some("someone-else"), None)))
                .is_err()
        );
        assert!(
            tokens
                .verify(&mint(&tokens, &claims("a", None, None)))
                .is_err()
        );

        let strict = Tokens::new(&AuthSettings {
            audience: "chat".into(),
            ..settings("s1")
        });
        assert!(
            strict
                .verify(&mint(
                    &strict,
                    &claims("a", Some("switchboard"), Some("chat"))
                ))
                .is_ok()
        );
        assert!(
            strict
                .verify(&mint(
                    &strict,
                    &claims("a", Some("switchboard"), Some("other"))
                ))
                .is_err()
        );
        assert!(
            strict
                .verify(&mint(&strict, &claims("a", Some("switchboard"), None)))
                .is_err()
        );
        let (user, token) = strict.issue_guest().unwrap();
        assert_eq!(strict.verify(&token).unwrap().user, user);

        let lax = Tokens::new(&AuthSettings {
            issuer: String::new(),
            ..settings("s1")
        });
        assert!(lax.verify(&mint(&lax, &claims("a", None, None))).is_ok());
        assert!(
            lax.verify(&mint(&lax, &claims("a", Some("anyone"), None)))
                .is_ok()
        );
    }

    #[test]
    fn room_invites_and_user_tokens_do_not_pass_for_each_other() {
        let tokens = Tokens::new(&settings("s3cret"));
        let room = RoomId::new_random();
        let invite = tokens
            .issue_room_invite(room, Duration::from_secs(60))
            .unwrap();
        assert_eq!(tokens.verify_room_invite(&invite).unwrap(), room);
        assert!(
            tokens.verify(&invite).is_err(),
            "an invite is no user token"
        );
        let (_, user_token) = tokens.issue_guest().unwrap();
        assert!(tokens.verify_room_invite(&user_token).is_err());
        let other = Tokens::new(&settings("other"));
        assert!(other.verify_room_invite(&invite).is_err(), "forged");
    }

    #[test]
    fn a_token_not_yet_valid_or_with_critical_extensions_is_refused() {
        let tokens = Tokens::new(&settings("s1"));
        let header = Header::new(Algorithm::HS256);
        let mut claims = serde_json::to_value(claims("a", Some("switchboard"), None)).unwrap();
        claims["nbf"] = serde_json::json!(now_secs() + 3600);
        let early = jsonwebtoken::encode(&header, &claims, &tokens.encoding).unwrap();
        assert!(tokens.verify(&early).is_err(), "nbf an hour ahead");
        claims["nbf"] = serde_json::json!(now_secs() - 10);
        let ready = jsonwebtoken::encode(&header, &claims, &tokens.encoding).unwrap();
        assert!(tokens.verify(&ready).is_ok());

        // The same claims, signed, with a header asking for an extension.
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let head = engine.encode(r#"{"alg":"HS256","typ":"JWT","crit":["exp-ext"],"exp-ext":1}"#);
        let body = engine.encode(serde_json::to_vec(&claims).unwrap());
        let signed = format!("{head}.{body}");
        let signature =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &tokens.encoding, Algorithm::HS256)
                .unwrap();
        let critical = format!("{signed}.{signature}");
        assert!(matches!(
            tokens.verify(&critical),
            Err(TokenError::CriticalExtension)
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
