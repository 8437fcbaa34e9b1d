//! CloudWatch Logs log groups.

use super::prelude::*;
use super::read_back_and_tag;

/// The retention values CloudWatch Logs accepts.
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// A log group with a retention policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:logs:LogGroup", checks = Self::checks)]
pub struct LogGroup {
    /// Name (forces replacement).
    #[resource(replace, len = 1..=512)]
    pub name: String,
    /// Retention in days (one of [`RETENTION_DAYS`]).
    pub retention_days: i32,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl LogGroup {
    /// A retention CloudWatch Logs accepts.
    fn checks(&self, c: Checks) -> Checks {
        let days = self.retention_days;
        c.require(RETENTION_DAYS.contains(&days), || {
            format!("retention_days {days} is not one of {RETENTION_DAYS:?}")
        })
    }
}

/// Provider for [`LogGroup`].
pub struct LogGroupProvider(pub Arc<Clients>);

fn outputs(arn: &str, name: &str) -> Outputs {
    obj(json!({ "arn": arn, "name": name }))
}

impl LogGroupProvider {
    async fn put_retention(&self, name: &str, days: i32) -> Result<(), ProviderError> {
        let r = self.0.logs.put_retention_policy().log_group_name(name);
        let r = r.retention_in_days(days).send().await;
        r.aws("logs:PutRetentionPolicy").map(|_| ())
    }
}

// CloudWatch Logs tags by log group ARN (without the trailing `:*`).
super::map_tagging!(
    aws_sdk_cloudwatchlogs::Client,
    "logs",
    resource_arn,
    list_tags_for_resource,
    "ListTagsForResource"
);

#[async_trait]
impl ResourceProvider for LogGroupProvider {
    type Resource = LogGroup;

    async fn read(&self, at: Lookup<'_, LogGroup>) -> Found<LogGroup> {
        let name = at.id_or(&at.desired.name);
        let r = self
            .0
            .logs
            .describe_log_groups()
            .log_group_name_prefix(name);
        let r = r
            .send()
            .await
            .aws("logs:DescribeLogGroups")
            .none_if_missing()?;
        let groups = r.as_ref().map(|r| r.log_groups()).unwrap_or_default();
        let Some(g) = groups.iter().find(|g| g.log_group_name() == Some(name)) else {
            return Ok(None);
        };
        let arn = g.arn().unwrap_or_default().trim_end_matches(":*");
        let props = LogGroup {
            name: name.to_string(),
            retention_days: g.retention_in_days().unwrap_or(0),
            tags: self.0.logs.tags(arn).await?,
        };
        Ok(Some(Read {
            id: name.to_string(),
            props,
            outputs: outputs(arn, name),
        }))
    }

    async fn create(&self, d: &LogGroup) -> Result<Created, ProviderError> {
        let r = self.0.logs.create_log_group().log_group_name(&d.name);
        let r = r.set_tags(Some(d.tags.clone().into_iter().collect()));
        r.send().await.aws("logs:CreateLogGroup")?;
        self.put_retention(&d.name, d.retention_days).await?;
        Ok(Created::read_back(&d.name))
    }

    async fn update(&self, id: &str, o: &LogGroup, d: &LogGroup) -> Result<Applied, ProviderError> {
        if o.retention_days != d.retention_days {
            self.put_retention(id, d.retention_days).await?;
        }
        read_back_and_tag(self, &self.0.logs, id, d, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, _last: &LogGroup) -> Result<(), ProviderError> {
        let r = self
            .0
            .logs
            .delete_log_group()
            .log_group_name(id)
            .send()
            .await;
        r.aws("logs:DeleteLogGroup").missing_ok()
    }
}
