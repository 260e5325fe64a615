//! Provisioning backends: adapters of `mailshift_core::provision::Provisioner` that create
//! the destination mailboxes (with their users' passwords and a quota), aliases and
//! forwards on the new server before any mail is copied.
//!
//! - [`sql::SqlProvisioner`]: PostfixAdmin-compatible `domain`, `mailbox`, `alias` tables
//!   in PostgreSQL (or an in-house schema mapped onto them), as read by Dovecot's SQL
//!   passdb and Postfix's SQL maps;
//! - [`command::CommandProvisioner`]: an operator's program, one run per action, with a
//!   JSON document on its standard input.
//!
//! The decisions (which password, which quota, what to change) are made in core; this
//! crate only carries them out and says what exists. [`hash`] makes SHA-crypt hashes and
//! temporary passwords; [`config`] reads a backend's TOML description.
//!
//! Architecture invariant: the only crate that writes to a mail stack's provisioning
//! database or runs an operator's program.

pub mod command;
pub mod config;
mod error;
pub mod hash;
pub mod sql;

pub use config::BackendConfig;
pub use error::ProvisionError;

use mailshift_core::provision::Provisioner;

/// The backend a configuration describes, connected (`sql` checks its tables and
/// columns now). `batch` is named in the command backend's documents.
pub async fn connect(
    config: &BackendConfig,
    batch: &str,
) -> Result<Box<dyn Provisioner>, ProvisionError> {
    Ok(match config {
        BackendConfig::Sql(s) => Box::new(sql::SqlProvisioner::connect((**s).clone()).await?),
        BackendConfig::Command(c) => {
            Box::new(command::CommandProvisioner::new((**c).clone(), batch))
        }
    })
}
