//! What the site administration page lists and changes beyond
//! [`crate::AuthStore`]: organizations, and the site-admin flag.

use async_trait::async_trait;

use crate::Result;
use crate::auth::OwnerRecord;

#[async_trait]
pub trait DirectoryStore: Send + Sync + 'static {
    /// Every organization, in name order.
    async fn list_orgs(&self) -> Result<Vec<OwnerRecord>>;

    /// Grants or withdraws site admin; `false` if there is no such user.
    async fn set_user_admin(&self, name: &str, admin: bool) -> Result<bool>;
}
