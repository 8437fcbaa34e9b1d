//! An IAM role.

use super::iam_tags;
use crate::providers::aws::{prelude::*, user_tags};
use serde_json::Value;

/// The characters of a role name.
const NAMES: Charset = Charset {
    name: "[A-Za-z0-9+=,.@_-]",
    allows: |c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c),
};

/// An IAM role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:iam:Role", checks = Self::checks)]
pub struct Role {
    /// Role name (forces replacement).
    #[resource(replace, chars(1..=64, NAMES))]
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

impl Role {
    /// The trust policy is a JSON object.
    fn checks(&self, c: Checks) -> Checks {
        c.require(self.assume_role_policy.is_object(), || {
            "assume_role_policy must be a JSON object".into()
        })
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

fn role_outputs(arn: &str, name: &str) -> Outputs {
    obj(json!({ "arn": arn, "name": name }))
}

/// Provider for [`Role`].
pub struct RoleProvider(pub Arc<Clients>);

#[async_trait]
impl ResourceProvider for RoleProvider {
    type Resource = Role;

    async fn read(&self, at: Lookup<'_, Role>) -> Found<Role> {
        let name = at.id_or(&at.desired.name);
        let r = self.0.iam.get_role().role_name(name).send().await;
        let r = r.aws("iam:GetRole").none_if_missing()?;
        let Some(role) = r.as_ref().and_then(|r| r.role()) else {
            return Ok(None);
        };
        let tags = role.tags().iter();
        let props = Role {
            name: role.role_name().to_string(),
            assume_role_policy: parse_policy(role.assume_role_policy_document().unwrap_or("{}")),
            tags: user_tags(tags.map(|t| (t.key().to_string(), t.value().to_string()))),
        };
        Ok(Some(Read {
            id: props.name.clone(),
            props,
            outputs: role_outputs(role.arn(), role.role_name()),
        }))
    }

    async fn create(&self, d: &Role) -> Result<Created, ProviderError> {
        let r = self
            .0
            .iam
            .create_role()
            .role_name(&d.name)
            .assume_role_policy_document(d.assume_role_policy.to_string())
            .set_tags(Some(iam_tags(&d.tags)?));
        let r = r.send().await.aws("iam:CreateRole")?;
        let arn = r.role().map(|r| r.arn()).unwrap_or_default();
        Ok(Created::new(&d.name, role_outputs(arn, &d.name)))
    }

    async fn update(&self, id: &str, o: &Role, d: &Role) -> Result<Applied, ProviderError> {
        if o.assume_role_policy != d.assume_role_policy {
            let r = self.0.iam.update_assume_role_policy().role_name(id);
            let r = r.policy_document(d.assume_role_policy.to_string());
            r.send().await.aws("iam:UpdateAssumeRolePolicy")?;
        }
        sync_tags(&self.0.iam, id, &o.tags, &d.tags).await?;
        Ok(Applied::ReadBack)
    }

    async fn delete(&self, id: &str, _last: &Role) -> Result<(), ProviderError> {
        let iam = &self.0.iam;
        // Attachments made outside the stack would block the delete: detach them too.
        let r = iam.list_attached_role_policies().role_name(id).send().await;
        let Some(att) = r.aws("iam:ListAttachedRolePolicies").none_if_missing()? else {
            return Ok(());
        };
        for arn in att
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
        {
            let r = iam.detach_role_policy().role_name(id).policy_arn(arn);
            r.send().await.aws("iam:DetachRolePolicy").missing_ok()?;
        }
        let r = iam.list_role_policies().role_name(id).send().await;
        if let Some(inline) = r.aws("iam:ListRolePolicies").none_if_missing()? {
            for p in inline.policy_names() {
                let r = iam.delete_role_policy().role_name(id).policy_name(p);
                r.send().await.aws("iam:DeleteRolePolicy").missing_ok()?;
            }
        }
        let r = iam.delete_role().role_name(id).send().await;
        r.aws("iam:DeleteRole").missing_ok()
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
