//! API Gateway v2 (HTTP APIs): the API, a Lambda proxy integration, routes and stages.

mod api;
mod integration;
mod route;
mod stage;

pub use api::{API_KIND, Api, ApiProvider};
pub use integration::{INTEGRATION_KIND, Integration, IntegrationProvider};
pub use route::{ROUTE_KIND, Route, RouteProvider};
pub use stage::{STAGE_KIND, Stage, StageProvider};

use async_trait::async_trait;

use super::{AwsResult, Clients, Tagging, Tags};
use crate::error::ProviderError;

/// The ARN API Gateway tags an API by.
fn api_arn(c: &Clients, id: &str) -> String {
    format!("arn:aws:apigateway:{}::/apis/{id}", c.region)
}

/// API Gateway tags by ARN.
#[async_trait]
impl Tagging for aws_sdk_apigatewayv2::Client {
    async fn tags(&self, arn: &str) -> Result<Tags, ProviderError> {
        let r = self.get_tags().resource_arn(arn).send().await;
        let r = r.aws("apigateway:GetTags")?;
        Ok(super::user_tags(r.tags().cloned().unwrap_or_default()))
    }
    async fn tag(&self, arn: &str, tags: Tags) -> Result<(), ProviderError> {
        let r = self.tag_resource().resource_arn(arn);
        let r = r.set_tags(Some(tags.into_iter().collect())).send().await;
        r.aws("apigateway:TagResource").map(|_| ())
    }
    async fn untag(&self, arn: &str, keys: Vec<String>) -> Result<(), ProviderError> {
        let r = self
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(keys));
        r.send().await.aws("apigateway:UntagResource").map(|_| ())
    }
}
