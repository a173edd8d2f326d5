//! Errors the HTTP surface answers with, in the SPEC's JSON body (SPEC §8).

use std::fmt;

use http::{Response, StatusCode};

use crate::body::ResponseBody;
pub use dualcast_layers::error::{ErrorResponse, ErrorType};

/// An error answer: a status, an `error_type`, a stable `details.error_code` and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    response: ErrorResponse,
    code: &'static str,
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
            response: ErrorResponse::new(status, error_type, message).detail("error_code", code),
            code,
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
        self.response = self.response.detail(key, value);
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The `error_type`.
    #[must_use]
    pub fn kind(&self) -> ErrorType {
        self.response.error_type()
    }

    /// The stable `details.error_code`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The response with the JSON body.
    #[must_use]
    pub fn into_response(self) -> Response<ResponseBody> {
        self.response.into_response()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.status().as_u16(),
            self.kind(),
            self.code
        )
    }
}

impl std::error::Error for ApiError {}
