//! The crate's one error type.

/// What can go wrong building or serving client settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An autodiscover request that cannot be read; the message says why (never echoing
    /// the body).
    #[error("{0}")]
    BadRequest(String),
    /// The signing certificate or key given by the operator cannot be used.
    #[error("cannot sign the Apple profiles: {0}")]
    Signing(String),
    /// A plist could not be written (should not happen for the values we build).
    #[error("cannot write the Apple profile: {0}")]
    Plist(String),
    /// A batch whose kit cannot be made as asked; the message says what to give.
    #[error("{0}")]
    Kit(String),
    /// The client directory (the fleet store behind it) failed.
    #[error("cannot read the client settings: {0}")]
    Directory(String),
}

impl Error {
    pub fn bad_request(msg: impl Into<String>) -> Error {
        Error::BadRequest(msg.into())
    }
}

impl From<mailshift_core::Error> for Error {
    fn from(e: mailshift_core::Error) -> Error {
        Error::Directory(e.to_string())
    }
}

impl From<Error> for mailshift_core::Error {
    fn from(e: Error) -> mailshift_core::Error {
        use mailshift_core::ErrorKind;
        let kind = match e {
            Error::Directory(_) => ErrorKind::Store,
            _ => ErrorKind::Usage,
        };
        mailshift_core::Error::new(kind, e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
