//! Where things live in Redis: every name derives from the namespace (docs/distributed.md,
//! "Redis key layout").

/// The names of one namespace. A key's *member* is its codec text (JSON); it names the key's
/// hash, its channel and its entry in the lease set.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    hash_prefix: String,
    channel_prefix: String,
    control_prefix: String,
    pub(crate) leases: String,
    pub(crate) epoch: String,
    pub(crate) audit: String,
}

impl Layout {
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            hash_prefix: format!("{namespace}:k:"),
            channel_prefix: format!("{namespace}:c:"),
            control_prefix: format!("{namespace}:r:"),
            leases: format!("{namespace}:leases"),
            epoch: format!("{namespace}:epoch"),
            audit: format!("{namespace}:audit"),
        }
    }

    /// The hash holding a key's state.
    pub(crate) fn hash(&self, member: &str) -> String {
        format!("{}{member}", self.hash_prefix)
    }

    /// The channel a key's transitions are published on.
    pub(crate) fn channel(&self, member: &str) -> String {
        format!("{}{member}", self.channel_prefix)
    }

    /// The channel a replica hears about the end of its own runs on.
    pub(crate) fn control(&self, replica: &str) -> String {
        format!("{}{replica}", self.control_prefix)
    }

    pub(crate) fn hash_prefix(&self) -> &str {
        &self.hash_prefix
    }

    pub(crate) fn channel_prefix(&self) -> &str {
        &self.channel_prefix
    }

    pub(crate) fn control_prefix(&self) -> &str {
        &self.control_prefix
    }

    /// The member of a key channel's name, if it is one.
    pub(crate) fn member_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.channel_prefix)
    }
}
