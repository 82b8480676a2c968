//! OAuth 2.0 access tokens: a small trait the application implements with
//! its own refresher.

use std::fmt;

use async_trait::async_trait;

use crate::error::TokenError;

/// An OAuth 2.0 access token (scope
/// `https://www.googleapis.com/auth/business.manage`). Its `Debug` and
/// `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret, to put in an `Authorization` header.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// Where the adapter gets access tokens. The application plugs in its own
/// refresher (a service account, a stored refresh token, ...).
///
/// The adapter calls [`token`](Self::token) before each request and, when
/// Google answers 401 `UNAUTHENTICATED`, calls [`refresh`](Self::refresh)
/// once and sends again with the new token.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// The current token (cached by the implementation as it sees fit).
    ///
    /// # Errors
    ///
    /// A [`TokenError`] when no token can be had; nothing is sent then.
    async fn token(&self) -> Result<AccessToken, TokenError>;

    /// A new token, because Google refused the current one.
    ///
    /// # Errors
    ///
    /// A [`TokenError`] when the token cannot be refreshed.
    async fn refresh(&self) -> Result<AccessToken, TokenError>;
}

/// A fixed token, for scripts and tests. It cannot be refreshed: a 401 ends
/// as [`AdapterError::Token`](crate::AdapterError::Token) and the row stays `pending`.
#[derive(Clone)]
pub struct StaticToken(AccessToken);

impl StaticToken {
    /// A source that always gives `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(AccessToken::new(token))
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticToken").field(&self.0).finish()
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        Ok(self.0.clone())
    }

    async fn refresh(&self) -> Result<AccessToken, TokenError> {
        Err(TokenError::permanent(
            "a static token cannot be refreshed; Google refused it",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_never_shows_its_secret() {
        let source = StaticToken::new("ya29.secret");
        assert!(!format!("{source:?}").contains("ya29"));
        let token = source.token().await.unwrap();
        assert_eq!(token.secret(), "ya29.secret");
        assert!(!format!("{token:?}").contains("ya29"));
        let err = source.refresh().await.unwrap_err();
        assert!(!err.is_retryable());
    }
}
