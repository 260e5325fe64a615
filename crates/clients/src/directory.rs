//! The client directory: the port through which the public routes ([`crate::http`])
//! read settings. `mailshift serve` backs it with the fleet store (batches give the
//! domains, their mailboxes the users); [`MemoryDirectory`] holds them in memory (tests,
//! static setups).

use crate::error::Result;
use crate::settings::{DomainSettings, UserSettings};
use async_trait::async_trait;
use std::collections::HashMap;

/// Where client settings come from.
#[async_trait]
pub trait ClientDirectory: Send + Sync + 'static {
    /// The settings of a mail domain whose clients we configure (`domain` lowercase);
    /// None when it is not one of ours.
    async fn domain(&self, domain: &str) -> Result<Option<DomainSettings>>;

    /// One user, by an address already checked by
    /// [`crate::settings::normalize_address`]; None when unknown. Implementations
    /// should compare addresses case-insensitively. A user's passwords are never
    /// returned here: the public routes do not hand them out.
    async fn user(&self, address: &str) -> Result<Option<UserSettings>>;
}

/// A directory held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryDirectory {
    domains: HashMap<String, DomainSettings>,
    users: HashMap<String, UserSettings>,
}

impl MemoryDirectory {
    pub fn new() -> MemoryDirectory {
        MemoryDirectory::default()
    }

    pub fn with_domain(mut self, d: DomainSettings) -> MemoryDirectory {
        self.domains.insert(d.domain.to_ascii_lowercase(), d);
        self
    }

    /// Adds a user (any password it carries is dropped: see [`ClientDirectory::user`]).
    pub fn with_user(mut self, mut u: UserSettings) -> MemoryDirectory {
        u.password = None;
        self.users.insert(u.address.to_ascii_lowercase(), u);
        self
    }
}

#[async_trait]
impl ClientDirectory for MemoryDirectory {
    async fn domain(&self, domain: &str) -> Result<Option<DomainSettings>> {
        Ok(self.domains.get(&domain.to_ascii_lowercase()).cloned())
    }

    async fn user(&self, address: &str) -> Result<Option<UserSettings>> {
        Ok(self.users.get(&address.to_ascii_lowercase()).cloned())
    }
}
