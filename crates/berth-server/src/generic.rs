//! Operations shared by every resource type: tags and resource policies. They check that the
//! resource exists and belongs to the caller by asking the service that owns its ARN's type.

use std::collections::BTreeMap;

use berth_core::{ApiError, Arn, Caller, ErrorKind};
use berth_store::Store;
use serde::{Deserialize, Serialize};

use crate::state::Services;

#[derive(Debug, thiserror::Error)]
pub enum GenericError {
    #[error("resource `{0}` not found")]
    ResourceNotFound(String),
    #[error("resource `{0}` has no resource policy")]
    NoPolicy(String),
    #[error("{0}")]
    Store(#[from] berth_store::StoreError),
    #[error("{0}")]
    Lookup(String),
}

impl ApiError for GenericError {
    fn kind(&self) -> ErrorKind {
        match self {
            GenericError::ResourceNotFound(_) | GenericError::NoPolicy(_) => ErrorKind::NotFound,
            GenericError::Store(_) | GenericError::Lookup(_) => ErrorKind::Internal,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagResourceInput {
    resource_arn: String,
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagResourceInput {
    resource_arn: String,
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceArnInput {
    resource_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutResourcePolicyInput {
    resource_arn: String,
    policy: String,
}

#[derive(Serialize)]
pub struct Empty {}

#[derive(Serialize)]
pub struct TagsOutput {
    tags: BTreeMap<String, String>,
}

#[derive(Serialize)]
pub struct PolicyOutput {
    policy: String,
}

#[derive(Clone)]
pub struct Generic {
    store: Store,
    services: Services,
}

impl Generic {
    pub fn new(store: Store, services: Services) -> Self {
        Generic { store, services }
    }

    /// Checks that `arn` names an existing resource of the caller's account.
    async fn resource(&self, caller: &Caller, arn: &str) -> Result<String, GenericError> {
        let not_found = || GenericError::ResourceNotFound(arn.to_string());
        let parsed: Arn = arn.parse().map_err(|_| not_found())?;
        if parsed.account != caller.account.as_str() {
            return Err(not_found());
        }
        let exists = match (parsed.resource_type(), parsed.resource_id()) {
            ("memory", Some(id)) => self
                .services
                .memory
                .exists(caller.account.as_str(), id)
                .await
                .map_err(|e| GenericError::Lookup(e.to_string()))?,
            ("runtime", Some(_)) => match &self.services.runtime {
                Some(runtime) => runtime
                    .resource_exists(caller, &parsed)
                    .await
                    .map_err(|e| GenericError::Lookup(e.to_string()))?,
                None => false,
            },
            ("code-interpreter-custom", Some(_)) => match &self.services.interpreter {
                Some(interpreter) => interpreter
                    .resource_exists(caller, &parsed)
                    .await
                    .map_err(|e| GenericError::Lookup(e.to_string()))?,
                None => false,
            },
            _ => false,
        };
        if exists {
            Ok(parsed.to_string())
        } else {
            Err(not_found())
        }
    }

    pub async fn tag_resource(&self, caller: &Caller, input: TagResourceInput) -> Result<Empty, GenericError> {
        let arn = self.resource(caller, &input.resource_arn).await?;
        self.store.tag_resource(&arn, &input.tags).await?;
        Ok(Empty {})
    }

    pub async fn untag_resource(&self, caller: &Caller, input: UntagResourceInput) -> Result<Empty, GenericError> {
        let arn = self.resource(caller, &input.resource_arn).await?;
        self.store.untag_resource(&arn, &input.tag_keys).await?;
        Ok(Empty {})
    }

    pub async fn list_tags_for_resource(
        &self,
        caller: &Caller,
        input: ResourceArnInput,
    ) -> Result<TagsOutput, GenericError> {
        let arn = self.resource(caller, &input.resource_arn).await?;
        Ok(TagsOutput {
            tags: self.store.tags(&arn).await?,
        })
    }

    pub async fn put_resource_policy(
        &self,
        caller: &Caller,
        input: PutResourcePolicyInput,
    ) -> Result<PolicyOutput, GenericError> {
        let arn = self.resource(caller, &input.resource_arn).await?;
        self.store.put_resource_policy(&arn, &input.policy).await?;
        Ok(PolicyOutput { policy: input.policy })
    }

    pub async fn get_resource_policy(
        &self,
        caller: &Caller,
        input: ResourceArnInput,
    ) -> Result<PolicyOutput, GenericError> {
        let arn = self.resource(caller, &input.resource_arn).await?;
        let policy = self
            .store
            .resource_policy(&arn)
            .await?
            .ok_or(GenericError::NoPolicy(arn))?;
        Ok(PolicyOutput { policy })
    }

    pub async fn delete_resource_policy(
        &self,
        caller: &Caller,
        input: ResourceArnInput,
    ) -> Result<Empty, GenericError> {
        let arn = self.resource(caller, &input.resource_arn).await?;
        if self.store.delete_resource_policy(&arn).await? {
            Ok(Empty {})
        } else {
            Err(GenericError::NoPolicy(arn))
        }
    }
}
