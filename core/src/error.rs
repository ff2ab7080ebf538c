//! Errors of the pure modules. Each carries the SQLSTATE class it maps to, so the pgrx layer can
//! report it without guessing, and the pure code stays free of PostgreSQL types.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 22023 invalid_parameter_value
    InvalidParameter,
    /// 22003 numeric_value_out_of_range
    OutOfRange,
    /// 22004 null_value_not_allowed
    NullValue,
    /// 42704 undefined_object
    Undefined,
    /// 42710 duplicate_object
    Duplicate,
    /// 42P17 invalid_object_definition (e.g. a dependency cycle)
    InvalidDefinition,
    /// 55000 object_not_in_prerequisite_state (e.g. pausing a draft test)
    WrongState,
    /// 54000 program_limit_exceeded (e.g. oversize content)
    TooLarge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AbError {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
}

impl AbError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        AbError { kind, message: message.into(), hint: None }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidParameter, message)
    }
    pub fn undefined(message: impl Into<String>) -> Self {
        Self::new(Kind::Undefined, message)
    }
    pub fn wrong_state(message: impl Into<String>) -> Self {
        Self::new(Kind::WrongState, message)
    }
}

impl fmt::Display for AbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AbError {}

pub type AbResult<T> = Result<T, AbError>;
