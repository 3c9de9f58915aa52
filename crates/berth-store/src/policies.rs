//! Resource policies, keyed by resource ARN. Stored and returned now; enforced by the services
//! that use them (runtimes, gateways) when those arrive.

use sqlx::Row;

use crate::{Result, Store};

impl Store {
    pub async fn put_resource_policy(&self, arn: &str, policy: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO resource_policies (resource_arn, policy, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (resource_arn) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
        )
        .bind(arn)
        .bind(policy)
        .bind(self.now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn resource_policy(&self, arn: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT policy FROM resource_policies WHERE resource_arn = $1")
            .bind(arn)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| r.try_get("policy")).transpose().map_err(Into::into)
    }

    /// Returns whether a policy was there.
    pub async fn delete_resource_policy(&self, arn: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM resource_policies WHERE resource_arn = $1")
            .bind(arn)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
