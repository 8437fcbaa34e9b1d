//! CloudWatch Logs log groups.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::{Clients, Tags, api, none_if_missing, obj, ok_if_missing};
use crate::engine::Resource;
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name.
pub const KIND: &str = "aws:logs:LogGroup";

/// The retention values CloudWatch Logs accepts.
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// A log group with a retention policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogGroup {
    /// Name (forces replacement).
    pub name: String,
    /// Retention in days (one of [`RETENTION_DAYS`]).
    pub retention_days: i32,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for LogGroup {
    const KIND: &'static str = KIND;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        if self.name.is_empty() || self.name.len() > 512 {
            e.push(format!("name `{}` must be 1-512 chars", self.name));
        }
        if !RETENTION_DAYS.contains(&self.retention_days) {
            e.push(format!(
                "retention_days {} is not one of {RETENTION_DAYS:?}",
                self.retention_days
            ));
        }
        e
    }
}

/// Provider for [`LogGroup`].
pub struct LogGroupProvider(pub Arc<Clients>);

fn outputs(arn: &str, name: &str) -> Map<String, Value> {
    obj(json!({ "arn": arn, "name": name }))
}

impl LogGroupProvider {
    async fn put_retention(&self, name: &str, days: i32) -> Result<(), ProviderError> {
        let r = self
            .0
            .logs
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(days)
            .send()
            .await;
        r.map(|_| ()).map_err(|e| api("logs:PutRetentionPolicy", e))
    }
}

#[async_trait]
impl Provider for LogGroupProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["name"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: LogGroup = props(desired)?;
        let name = id.unwrap_or(&d.name);
        let r = self
            .0
            .logs
            .describe_log_groups()
            .log_group_name_prefix(name)
            .send()
            .await;
        let Some(r) = none_if_missing(r.map_err(|e| api("logs:DescribeLogGroups", e)))? else {
            return Ok(None);
        };
        let Some(g) = r
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(name))
        else {
            return Ok(None);
        };
        let arn = g
            .arn()
            .unwrap_or_default()
            .trim_end_matches(":*")
            .to_string();
        let t = self
            .0
            .logs
            .list_tags_for_resource()
            .resource_arn(&arn)
            .send()
            .await;
        let t = t.map_err(|e| api("logs:ListTagsForResource", e))?;
        let obs = LogGroup {
            name: name.to_string(),
            retention_days: g.retention_in_days().unwrap_or(0),
            tags: super::user_tags(t.tags().cloned().unwrap_or_default()),
        };
        Ok(Some(Observed {
            id: name.to_string(),
            props: to_value(&obs)?,
            outputs: outputs(&arn, name),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: LogGroup = props(desired)?;
        let r = self
            .0
            .logs
            .create_log_group()
            .log_group_name(&d.name)
            .set_tags(Some(d.tags.clone().into_iter().collect()))
            .send()
            .await;
        r.map_err(|e| api("logs:CreateLogGroup", e))?;
        self.put_retention(&d.name, d.retention_days).await?;
        let now = self.read(Some(&d.name), desired, None).await?;
        Ok(Observed {
            id: d.name.clone(),
            props: desired.clone(),
            outputs: now.map(|n| n.outputs).unwrap_or_default(),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: LogGroup = props(observed)?;
        let d: LogGroup = props(desired)?;
        if o.retention_days != d.retention_days {
            self.put_retention(id, d.retention_days).await?;
        }
        let now = self.read(Some(id), desired, None).await?;
        let outputs = now.map(|n| n.outputs).unwrap_or_default();
        let arn = super::arn_output(&outputs);
        let logs = &self.0.logs;
        let set = |t: Tags| async {
            let r = logs
                .tag_resource()
                .resource_arn(&arn)
                .set_tags(Some(t.into_iter().collect()));
            r.send()
                .await
                .map(|_| ())
                .map_err(|e| api("logs:TagResource", e))
        };
        let rm = |k: Vec<String>| async {
            let r = logs
                .untag_resource()
                .resource_arn(&arn)
                .set_tag_keys(Some(k));
            r.send()
                .await
                .map(|_| ())
                .map_err(|e| api("logs:UntagResource", e))
        };
        super::retag(&o.tags, &d.tags, set, rm).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs,
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let r = self
            .0
            .logs
            .delete_log_group()
            .log_group_name(id)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("logs:DeleteLogGroup", e)))
    }
}
