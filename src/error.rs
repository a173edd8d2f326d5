//! Errors the HTTP surface answers with, in the SPEC's JSON body (SPEC §8).

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;
pub use dualcast_layers::error::{ErrorResponse, ErrorType};

/// An error answer: a status, an `error_type`, a stable `details.error_code` and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    // Boxed: errors are rare, and a small `Result` keeps the happy path cheap.
    inner: Box<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    response: ErrorResponse,
    code: &'static str,
    headers: HeaderMap,
}

impl ApiError {
    /// An error with every part given.
    pub fn new(
        status: StatusCode,
        error_type: ErrorType,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            inner: Box::new(Inner {
                response: ErrorResponse::new(status, error_type, message)
                    .detail("error_code", code),
                code,
                headers: HeaderMap::new(),
            }),
        }
    }

    /// `400 validation_error`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::ValidationError,
            code,
            message,
        )
    }

    /// `403 authorization_error`.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorType::AuthorizationError,
            code,
            message,
        )
    }

    /// `500 system_error`.
    pub fn system(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::SystemError,
            "INTERNAL",
            message,
        )
    }

    /// Adds a field to `details`.
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.inner.response = self.inner.response.detail(key, value);
        self
    }

    /// Adds a response header, e.g. `Allow` on a 405.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.inner.headers.append(name, value);
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.inner.response.status()
    }

    /// The `error_type`.
    #[must_use]
    pub fn kind(&self) -> ErrorType {
        self.inner.response.error_type()
    }

    /// The stable `details.error_code`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.inner.code
    }

    /// The response with the JSON body.
    #[must_use]
    pub fn into_response(self) -> Response<ResponseBody> {
        let Inner {
            response, headers, ..
        } = *self.inner;
        let mut response: Response<ResponseBody> = response.into_response();
        response.headers_mut().extend(headers);
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.status().as_u16(),
            self.kind(),
            self.inner.code
        )
    }
}

impl std::error::Error for ApiError {}
