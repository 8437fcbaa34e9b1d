//! A VPC.

use super::{
    check_cidr, delete_when_free, ec2_tags, first, found, id_out, ids_or_tags, sync_tags_then_id,
    tag_spec,
};
use crate::providers::aws::prelude::*;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName};

/// A VPC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:ec2:Vpc", checks = Self::checks)]
pub struct Vpc {
    /// IPv4 CIDR (forces replacement).
    #[resource(replace)]
    pub cidr_block: String,
    /// The Amazon DNS server (`enableDnsSupport`; AWS's default is on).
    #[serde(default = "on")]
    pub enable_dns_support: bool,
    /// DNS names for instances (`enableDnsHostnames`; AWS's default is off, and EKS
    /// nodes cannot register without it).
    #[serde(default = "on")]
    pub enable_dns_hostnames: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Vpc {
    /// The CIDR's syntax.
    fn checks(&self, c: Checks) -> Checks {
        check_cidr(c, &self.cidr_block)
    }
}

fn on() -> bool {
    true
}

/// Provider for [`Vpc`].
pub struct VpcProvider(pub Arc<Clients>);

impl VpcProvider {
    async fn attribute(&self, id: &str, name: VpcAttributeName) -> Result<bool, ProviderError> {
        let r = self
            .0
            .ec2
            .describe_vpc_attribute()
            .vpc_id(id)
            .attribute(name.clone());
        let r = r.send().await.aws("ec2:DescribeVpcAttribute")?;
        let value = match name {
            VpcAttributeName::EnableDnsHostnames => r.enable_dns_hostnames(),
            _ => r.enable_dns_support(),
        };
        Ok(value.and_then(|v| v.value()).unwrap_or(false))
    }

    /// The DNS attributes that differ from `old` (all of them on create). AWS takes
    /// one attribute per `ModifyVpcAttribute` call.
    async fn set_dns(&self, id: &str, old: Option<&Vpc>, d: &Vpc) -> Result<(), ProviderError> {
        let changed = |get: fn(&Vpc) -> bool| old.is_none_or(|o| get(o) != get(d));
        let value = |on: bool| AttributeBooleanValue::builder().value(on).build();
        let modify = || self.0.ec2.modify_vpc_attribute().vpc_id(id);
        if changed(|v| v.enable_dns_support) {
            let r = modify().enable_dns_support(value(d.enable_dns_support));
            r.send().await.aws("ec2:ModifyVpcAttribute")?;
        }
        if changed(|v| v.enable_dns_hostnames) {
            let r = modify().enable_dns_hostnames(value(d.enable_dns_hostnames));
            r.send().await.aws("ec2:ModifyVpcAttribute")?;
        }
        Ok(())
    }
}

#[async_trait]
impl ResourceProvider for VpcProvider {
    type Resource = Vpc;

    async fn read(&self, at: Lookup<'_, Vpc>) -> Found<Vpc> {
        let (ids, filters) = ids_or_tags(at.id, &at.desired.tags);
        let r = self
            .0
            .ec2
            .describe_vpcs()
            .set_vpc_ids(ids)
            .set_filters(filters);
        let Some(v) = first(r.send().await.aws("ec2:DescribeVpcs"), |r| r.vpcs)? else {
            return Ok(None);
        };
        let id = v.vpc_id().unwrap_or_default();
        let props = Vpc {
            cidr_block: v.cidr_block().unwrap_or_default().to_string(),
            enable_dns_support: self
                .attribute(id, VpcAttributeName::EnableDnsSupport)
                .await?,
            enable_dns_hostnames: self
                .attribute(id, VpcAttributeName::EnableDnsHostnames)
                .await?,
            tags: ec2_tags(v.tags()),
        };
        found(v.vpc_id(), props)
    }

    async fn create(&self, d: &Vpc) -> Result<Created, ProviderError> {
        let r = self.0.ec2.create_vpc().cidr_block(&d.cidr_block);
        let r = r.tag_specifications(tag_spec(ResourceType::Vpc, &d.tags));
        let r = r.send().await.aws("ec2:CreateVpc")?;
        let id = r.vpc().and_then(|v| v.vpc_id()).unwrap_or_default();
        self.set_dns(id, None, d).await?;
        Ok(Created::new(id, id_out(id)))
    }

    async fn update(&self, id: &str, o: &Vpc, d: &Vpc) -> Result<Applied, ProviderError> {
        self.set_dns(id, Some(o), d).await?;
        sync_tags_then_id(&self.0.ec2, id, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, _last: &Vpc) -> Result<(), ProviderError> {
        delete_when_free(|| async {
            let r = self.0.ec2.delete_vpc().vpc_id(id).send().await;
            r.aws("ec2:DeleteVpc").map(|_| ())
        })
        .await
    }
}
