//! An internet gateway attached to a VPC.

use super::{
    dependency_violation, ec2_tags, first, found, id_out, ids_or_tags, sync_tags_then_id, tag_spec,
};
use crate::providers::aws::{prelude::*, retry_on};
use aws_sdk_ec2::types::ResourceType;
use std::time::Duration;

/// An internet gateway attached to a VPC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:ec2:InternetGateway")]
pub struct InternetGateway {
    /// The VPC it is attached to (forces replacement).
    #[resource(replace)]
    pub vpc_id: Input<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// Provider for [`InternetGateway`].
pub struct InternetGatewayProvider(pub Arc<Clients>);

#[async_trait]
impl ResourceProvider for InternetGatewayProvider {
    type Resource = InternetGateway;

    async fn read(&self, at: Lookup<'_, InternetGateway>) -> Found<InternetGateway> {
        let (ids, filters) = ids_or_tags(at.id, &at.desired.tags);
        let r = self.0.ec2.describe_internet_gateways();
        let r = r.set_internet_gateway_ids(ids).set_filters(filters).send();
        let r = r.await.aws("ec2:DescribeInternetGateways");
        let Some(g) = first(r, |r| r.internet_gateways)? else {
            return Ok(None);
        };
        let vpc = g.attachments().first().and_then(|a| a.vpc_id());
        let props = InternetGateway {
            vpc_id: Input::Value(vpc.unwrap_or_default().to_string()),
            tags: ec2_tags(g.tags()),
        };
        found(g.internet_gateway_id(), props)
    }

    async fn create(&self, d: &InternetGateway) -> Result<Created, ProviderError> {
        let r = self.0.ec2.create_internet_gateway();
        let r = r.tag_specifications(tag_spec(ResourceType::InternetGateway, &d.tags));
        let r = r.send().await.aws("ec2:CreateInternetGateway")?;
        let id = r.internet_gateway().and_then(|g| g.internet_gateway_id());
        let id = id.unwrap_or_default();
        let a = self.0.ec2.attach_internet_gateway().internet_gateway_id(id);
        let a = a.vpc_id(d.vpc_id.as_str()).send().await;
        a.aws("ec2:AttachInternetGateway")?;
        Ok(Created::new(id, id_out(id)))
    }

    async fn update(
        &self,
        id: &str,
        o: &InternetGateway,
        d: &InternetGateway,
    ) -> Result<Applied, ProviderError> {
        sync_tags_then_id(&self.0.ec2, id, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, last: &InternetGateway) -> Result<(), ProviderError> {
        if let Some(vpc) = last.vpc_id.value().filter(|v| !v.is_empty()) {
            let r = retry_on(Duration::from_secs(300), dependency_violation, || async {
                let r = self.0.ec2.detach_internet_gateway().internet_gateway_id(id);
                let r = r.vpc_id(vpc).send().await;
                r.aws("ec2:DetachInternetGateway").map(|_| ())
            })
            .await;
            match r {
                Err(e) if e.is_not_found() || e.code() == Some("Gateway.NotAttached") => {}
                r => r?,
            }
        }
        let r = self.0.ec2.delete_internet_gateway().internet_gateway_id(id);
        r.send().await.aws("ec2:DeleteInternetGateway").missing_ok()
    }
}
