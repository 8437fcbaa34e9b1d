//! A subnet in one availability zone.

use super::{
    check_cidr, delete_when_free, ec2_tags, first, found, id_out, ids_or_tags, sync_tags_then_id,
    tag_spec,
};
use crate::providers::aws::prelude::*;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};

/// A subnet in one availability zone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:ec2:Subnet", checks = Self::checks)]
pub struct Subnet {
    /// VPC id.
    #[resource(replace)]
    pub vpc_id: Input<String>,
    /// IPv4 CIDR.
    #[resource(replace)]
    pub cidr_block: String,
    /// Availability zone, e.g. `us-east-1a`.
    #[resource(replace, non_empty)]
    pub availability_zone: String,
    /// Give instances launched here a public IP (nodes in public subnets need it).
    #[serde(default)]
    pub map_public_ip_on_launch: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Subnet {
    /// The CIDR's syntax.
    fn checks(&self, c: Checks) -> Checks {
        check_cidr(c, &self.cidr_block)
    }
}

/// Provider for [`Subnet`].
pub struct SubnetProvider(pub Arc<Clients>);

impl SubnetProvider {
    async fn set_public_ip(&self, id: &str, on: bool) -> Result<(), ProviderError> {
        let v = AttributeBooleanValue::builder().value(on).build();
        let r = self.0.ec2.modify_subnet_attribute().subnet_id(id);
        let r = r.map_public_ip_on_launch(v).send().await;
        r.aws("ec2:ModifySubnetAttribute").map(|_| ())
    }
}

#[async_trait]
impl ResourceProvider for SubnetProvider {
    type Resource = Subnet;

    async fn read(&self, at: Lookup<'_, Subnet>) -> Found<Subnet> {
        let (ids, filters) = ids_or_tags(at.id, &at.desired.tags);
        let r = self.0.ec2.describe_subnets().set_subnet_ids(ids);
        let r = r.set_filters(filters).send().await;
        let Some(s) = first(r.aws("ec2:DescribeSubnets"), |r| r.subnets)? else {
            return Ok(None);
        };
        let props = Subnet {
            vpc_id: Input::Value(s.vpc_id().unwrap_or_default().to_string()),
            cidr_block: s.cidr_block().unwrap_or_default().to_string(),
            availability_zone: s.availability_zone().unwrap_or_default().to_string(),
            map_public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
            tags: ec2_tags(s.tags()),
        };
        found(s.subnet_id(), props)
    }

    async fn create(&self, d: &Subnet) -> Result<Created, ProviderError> {
        let r = self
            .0
            .ec2
            .create_subnet()
            .vpc_id(d.vpc_id.as_str())
            .cidr_block(&d.cidr_block)
            .availability_zone(&d.availability_zone)
            .tag_specifications(tag_spec(ResourceType::Subnet, &d.tags));
        let r = r.send().await.aws("ec2:CreateSubnet")?;
        let id = r.subnet().and_then(|s| s.subnet_id()).unwrap_or_default();
        if d.map_public_ip_on_launch {
            self.set_public_ip(id, true).await?;
        }
        Ok(Created::new(id, id_out(id)))
    }

    async fn update(&self, id: &str, o: &Subnet, d: &Subnet) -> Result<Applied, ProviderError> {
        if o.map_public_ip_on_launch != d.map_public_ip_on_launch {
            self.set_public_ip(id, d.map_public_ip_on_launch).await?;
        }
        sync_tags_then_id(&self.0.ec2, id, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, _last: &Subnet) -> Result<(), ProviderError> {
        delete_when_free(|| async {
            let r = self.0.ec2.delete_subnet().subnet_id(id).send().await;
            r.aws("ec2:DeleteSubnet").map(|_| ())
        })
        .await
    }
}
