//! A managed policy attached to a role.

use crate::providers::aws::{prelude::*, retry_on};
use std::time::Duration;

/// Attaches a managed policy to a role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:iam:RolePolicyAttachment", checks = Self::checks)]
pub struct RolePolicyAttachment {
    /// Role name.
    #[resource(replace)]
    pub role: Input<String>,
    /// Managed policy ARN.
    #[resource(replace)]
    pub policy_arn: String,
}

impl RolePolicyAttachment {
    /// The policy is named by its ARN.
    fn checks(&self, c: Checks) -> Checks {
        c.require(self.policy_arn.starts_with("arn:"), || {
            format!("policy_arn `{}` is not an ARN", self.policy_arn)
        })
    }
}

/// IAM's own reads lag its writes: a role created a moment ago may be reported missing.
/// A missing *policy* is permanent and not retried.
fn role_not_visible(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Api { code, message, .. }
        if code == "NoSuchEntity" && message.to_ascii_lowercase().contains("role") && !message.contains("Policy"))
}

/// Provider for [`RolePolicyAttachment`]; its id is `role|policy_arn`.
pub struct AttachmentProvider(pub Arc<Clients>);

impl AttachmentProvider {
    async fn attach(&self, role: &str, policy: &str) -> Result<(), ProviderError> {
        let r = self.0.iam.attach_role_policy().role_name(role);
        let r = r.policy_arn(policy).send().await;
        r.aws("iam:AttachRolePolicy").map(|_| ())
    }
}

#[async_trait]
impl ResourceProvider for AttachmentProvider {
    type Resource = RolePolicyAttachment;

    async fn read(&self, at: Lookup<'_, RolePolicyAttachment>) -> Found<RolePolicyAttachment> {
        let key = join_id(at.desired.role.as_str(), &at.desired.policy_arn);
        let (role, arn) = split_id(at.id_or(&key));
        let r = self.0.iam.list_attached_role_policies().role_name(role);
        let r = r.send().await;
        let Some(att) = r.aws("iam:ListAttachedRolePolicies").none_if_missing()? else {
            return Ok(None);
        };
        let mut arns = att.attached_policies().iter().map(|p| p.policy_arn());
        if !arns.any(|a| a == Some(arn)) {
            return Ok(None);
        }
        Ok(Some(Read {
            id: join_id(role, arn),
            props: RolePolicyAttachment {
                role: Input::Value(role.to_string()),
                policy_arn: arn.to_string(),
            },
            outputs: Outputs::new(),
        }))
    }

    async fn create(&self, d: &RolePolicyAttachment) -> Result<Created, ProviderError> {
        let role = d.role.as_str();
        // A role created a moment ago may not be visible to IAM's own reads yet.
        match self.attach(role, &d.policy_arn).await {
            Err(e) if role_not_visible(&e) => {
                let again = || self.attach(role, &d.policy_arn);
                retry_on(Duration::from_secs(20), role_not_visible, again).await?;
            }
            r => r?,
        }
        let id = join_id(role, &d.policy_arn);
        Ok(Created::new(id, Outputs::new()))
    }

    // Every property forces replacement: the default `update` (nothing to change in
    // place) serves.

    async fn delete(&self, id: &str, _last: &RolePolicyAttachment) -> Result<(), ProviderError> {
        let (role, arn) = split_id(id);
        let r = self
            .0
            .iam
            .detach_role_policy()
            .role_name(role)
            .policy_arn(arn);
        r.send().await.aws("iam:DetachRolePolicy").missing_ok()
    }
}
