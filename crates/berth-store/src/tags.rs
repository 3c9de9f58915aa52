//! Tags, keyed by resource ARN.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use crate::{Result, Store};

impl Store {
    /// Adds or overwrites tags.
    pub async fn tag_resource(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_tags(&mut tx, arn, tags).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        let mut tx = self.begin().await?;
        for key in keys {
            sqlx::query("DELETE FROM tags WHERE resource_arn = $1 AND tag_key = $2")
                .bind(arn)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn tags(&self, arn: &str) -> Result<BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT tag_key, tag_value FROM tags WHERE resource_arn = $1")
            .bind(arn)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tag_key")?, r.try_get("tag_value")?)))
            .collect()
    }
}

/// Writes tags in the caller's transaction (a resource created with tags).
pub async fn insert_tags(tx: &mut AnyConnection, arn: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in tags {
        sqlx::query(
            "INSERT INTO tags (resource_arn, tag_key, tag_value) VALUES ($1, $2, $3) \
             ON CONFLICT (resource_arn, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
        )
        .bind(arn)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Removes every tag and the resource policy of a deleted resource, in the caller's transaction.
pub async fn forget_resource(tx: &mut AnyConnection, arn: &str) -> Result<()> {
    sqlx::query("DELETE FROM tags WHERE resource_arn = $1")
        .bind(arn)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM resource_policies WHERE resource_arn = $1")
        .bind(arn)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
