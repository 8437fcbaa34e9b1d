//! IAM roles and managed-policy attachments.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::{Clients, Tags, api, none_if_missing, obj, ok_if_missing, split_id, tag_delta};
use crate::engine::{Input, Resource};
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name of [`Role`].
pub const ROLE_KIND: &str = "aws:iam:Role";
/// Kind name of [`RolePolicyAttachment`].
pub const ATTACH_KIND: &str = "aws:iam:RolePolicyAttachment";

/// An IAM role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Role {
    /// Role name (forces replacement).
    pub name: String,
    /// The trust policy as JSON.
    pub assume_role_policy: Value,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Role {
    /// A role that the given AWS service principal (e.g. `lambda.amazonaws.com`) may assume.
    pub fn for_service(name: impl Into<String>, service: &str) -> Self {
        Role {
            name: name.into(),
            assume_role_policy: json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Service": service },
                    "Action": "sts:AssumeRole"
                }]
            }),
            tags: Tags::new(),
        }
    }
}

impl Resource for Role {
    const KIND: &'static str = ROLE_KIND;
    fn validate(&self) -> Vec<String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        let mut e = vec![];
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(ok) {
            e.push(format!(
                "name `{}` must be 1-64 chars of [A-Za-z0-9+=,.@_-]",
                self.name
            ));
        }
        if !self.assume_role_policy.is_object() {
            e.push("assume_role_policy must be a JSON object".into());
        }
        e
    }
}

/// Attaches a managed policy to a role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolePolicyAttachment {
    /// Role name.
    pub role: Input<String>,
    /// Managed policy ARN.
    pub policy_arn: String,
}

impl Resource for RolePolicyAttachment {
    const KIND: &'static str = ATTACH_KIND;
    const TAGGABLE: bool = false;
    fn validate(&self) -> Vec<String> {
        if self.policy_arn.starts_with("arn:") {
            vec![]
        } else {
            vec![format!("policy_arn `{}` is not an ARN", self.policy_arn)]
        }
    }
}

/// Decodes the URL-encoded policy documents IAM returns.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_policy(doc: &str) -> Value {
    serde_json::from_str(doc)
        .or_else(|_| serde_json::from_str(&percent_decode(doc)))
        .unwrap_or_else(|_| Value::String(doc.to_string()))
}

fn iam_tag(k: &str, v: &str) -> Result<aws_sdk_iam::types::Tag, ProviderError> {
    aws_sdk_iam::types::Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| ProviderError::Props(e.to_string()))
}

fn role_outputs(arn: &str, name: &str) -> Map<String, Value> {
    obj(json!({ "arn": arn, "name": name }))
}

/// Provider for [`Role`].
pub struct RoleProvider(pub Arc<Clients>);

#[async_trait]
impl Provider for RoleProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["name"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Role = props(desired)?;
        let name = id.unwrap_or(&d.name);
        let r = self.0.iam.get_role().role_name(name).send().await;
        let Some(r) = none_if_missing(r.map_err(|e| api("iam:GetRole", e)))? else {
            return Ok(None);
        };
        let Some(role) = r.role() else {
            return Ok(None);
        };
        let obs = Role {
            name: role.role_name().to_string(),
            assume_role_policy: parse_policy(role.assume_role_policy_document().unwrap_or("{}")),
            tags: super::user_tags(
                role.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string())),
            ),
        };
        Ok(Some(Observed {
            id: obs.name.clone(),
            props: to_value(&obs)?,
            outputs: role_outputs(role.arn(), role.role_name()),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Role = props(desired)?;
        let tags = d
            .tags
            .iter()
            .map(|(k, v)| iam_tag(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        let r = self
            .0
            .iam
            .create_role()
            .role_name(&d.name)
            .assume_role_policy_document(d.assume_role_policy.to_string())
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| api("iam:CreateRole", e))?;
        let arn = r.role().map(|r| r.arn().to_string()).unwrap_or_default();
        Ok(Observed {
            id: d.name.clone(),
            props: desired.clone(),
            outputs: role_outputs(&arn, &d.name),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Role = props(observed)?;
        let d: Role = props(desired)?;
        if o.assume_role_policy != d.assume_role_policy {
            let r = self
                .0
                .iam
                .update_assume_role_policy()
                .role_name(id)
                .policy_document(d.assume_role_policy.to_string())
                .send()
                .await;
            r.map_err(|e| api("iam:UpdateAssumeRolePolicy", e))?;
        }
        let (set, rm) = tag_delta(&o.tags, &d.tags);
        if !set.is_empty() {
            let tags = set
                .iter()
                .map(|(k, v)| iam_tag(k, v))
                .collect::<Result<Vec<_>, _>>()?;
            let r = self
                .0
                .iam
                .tag_role()
                .role_name(id)
                .set_tags(Some(tags))
                .send()
                .await;
            r.map_err(|e| api("iam:TagRole", e))?;
        }
        if !rm.is_empty() {
            let r = self
                .0
                .iam
                .untag_role()
                .role_name(id)
                .set_tag_keys(Some(rm))
                .send()
                .await;
            r.map_err(|e| api("iam:UntagRole", e))?;
        }
        let now = self.read(Some(id), desired, None).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: now.map(|n| n.outputs).unwrap_or_default(),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        // Attachments made outside the stack would block the delete: detach them too.
        let r = self
            .0
            .iam
            .list_attached_role_policies()
            .role_name(id)
            .send()
            .await;
        let Some(att) = none_if_missing(r.map_err(|e| api("iam:ListAttachedRolePolicies", e)))?
        else {
            return Ok(());
        };
        for p in att.attached_policies() {
            if let Some(arn) = p.policy_arn() {
                let r = self
                    .0
                    .iam
                    .detach_role_policy()
                    .role_name(id)
                    .policy_arn(arn)
                    .send()
                    .await;
                ok_if_missing(r.map(|_| ()).map_err(|e| api("iam:DetachRolePolicy", e)))?;
            }
        }
        let r = self.0.iam.list_role_policies().role_name(id).send().await;
        if let Some(inline) = none_if_missing(r.map_err(|e| api("iam:ListRolePolicies", e)))? {
            for p in inline.policy_names() {
                let r = self
                    .0
                    .iam
                    .delete_role_policy()
                    .role_name(id)
                    .policy_name(p)
                    .send()
                    .await;
                ok_if_missing(r.map(|_| ()).map_err(|e| api("iam:DeleteRolePolicy", e)))?;
            }
        }
        let r = self.0.iam.delete_role().role_name(id).send().await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("iam:DeleteRole", e)))
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

#[async_trait]
impl Provider for AttachmentProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["role", "policy_arn"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: RolePolicyAttachment = props(desired)?;
        let key = format!("{}|{}", d.role.as_str(), d.policy_arn);
        let (role, arn) = split_id(id.unwrap_or(&key));
        let r = self
            .0
            .iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await;
        let Some(att) = none_if_missing(r.map_err(|e| api("iam:ListAttachedRolePolicies", e)))?
        else {
            return Ok(None);
        };
        if !att
            .attached_policies()
            .iter()
            .any(|p| p.policy_arn() == Some(arn))
        {
            return Ok(None);
        }
        let obs = json!({ "role": role, "policy_arn": arn });
        Ok(Some(Observed {
            id: format!("{role}|{arn}"),
            props: obs,
            outputs: Map::new(),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: RolePolicyAttachment = props(desired)?;
        let role = d.role.as_str();
        let r = self
            .0
            .iam
            .attach_role_policy()
            .role_name(role)
            .policy_arn(&d.policy_arn)
            .send()
            .await;
        // A role created a moment ago may not be visible to IAM's own reads yet.
        if let Err(e) = r {
            let e = api("iam:AttachRolePolicy", e);
            if !role_not_visible(&e) {
                return Err(e);
            }
            super::retry_on(Duration::from_secs(20), role_not_visible, || async {
                let r = self
                    .0
                    .iam
                    .attach_role_policy()
                    .role_name(role)
                    .policy_arn(&d.policy_arn)
                    .send()
                    .await;
                r.map(|_| ()).map_err(|e| api("iam:AttachRolePolicy", e))
            })
            .await?;
        }
        Ok(Observed {
            id: format!("{role}|{}", d.policy_arn),
            props: desired.clone(),
            outputs: Map::new(),
        })
    }

    async fn update(
        &self,
        id: &str,
        _observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        // Every property forces replacement; nothing to change in place.
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: Map::new(),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let (role, arn) = split_id(id);
        let r = self
            .0
            .iam
            .detach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("iam:DetachRolePolicy", e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_url_encoded_policy() {
        let v = parse_policy("%7B%22a%22%3A%20%22b%22%7D");
        assert_eq!(v, json!({"a": "b"}));
    }
}
