//! A refusal the broker answers itself (a status and a short message,
//! never the credential), made wherever a request stops.

use hyper::StatusCode;

/// A refusal the broker answers itself.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u32>,
}

pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        retry_after: None,
    }
}
