//! A route table with a default route to an internet gateway, associated with subnets.

use super::{ec2_tags, first, found, id_out, ids_or_tags, sync_tags_then_id, tag_spec};
use crate::providers::aws::{prelude::*, same_order};
use aws_sdk_ec2::types::ResourceType;

/// The destination of the default route.
const ANYWHERE: &str = "0.0.0.0/0";

/// A route table with a default route to an internet gateway, associated with subnets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:ec2:RouteTable")]
pub struct RouteTable {
    /// VPC id (forces replacement).
    #[resource(replace)]
    pub vpc_id: Input<String>,
    /// Target of the `0.0.0.0/0` route.
    pub gateway_id: Input<String>,
    /// Associated subnets.
    pub subnet_ids: Vec<Input<String>>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// Provider for [`RouteTable`].
pub struct RouteTableProvider(pub Arc<Clients>);

impl RouteTableProvider {
    /// The table's subnet associations: (subnet, association id).
    async fn associations(&self, id: &str) -> Result<Vec<(String, String)>, ProviderError> {
        let r = self.0.ec2.describe_route_tables().route_table_ids(id);
        let r = r.send().await.aws("ec2:DescribeRouteTables")?;
        Ok(r.route_tables()
            .iter()
            .flat_map(|t| t.associations())
            .filter(|a| !a.main().unwrap_or(false))
            .filter_map(|a| {
                Some((
                    a.subnet_id()?.to_string(),
                    a.route_table_association_id()?.to_string(),
                ))
            })
            .collect())
    }

    async fn associate(&self, id: &str, subnet: &str) -> Result<(), ProviderError> {
        let r = self.0.ec2.associate_route_table().route_table_id(id);
        let r = r.subnet_id(subnet).send().await;
        r.aws("ec2:AssociateRouteTable").map(|_| ())
    }

    async fn disassociate(&self, assoc: &str) -> Result<(), ProviderError> {
        let r = self.0.ec2.disassociate_route_table().association_id(assoc);
        r.send()
            .await
            .aws("ec2:DisassociateRouteTable")
            .missing_ok()
    }

    /// Points the default route at `gateway`: a new route when there was none.
    async fn route_to(&self, id: &str, gateway: &str, exists: bool) -> Result<(), ProviderError> {
        let ec2 = &self.0.ec2;
        if exists {
            let r = ec2.replace_route().route_table_id(id);
            let r = r.destination_cidr_block(ANYWHERE).gateway_id(gateway);
            r.send().await.aws("ec2:ReplaceRoute").map(|_| ())
        } else {
            let r = ec2.create_route().route_table_id(id);
            let r = r.destination_cidr_block(ANYWHERE).gateway_id(gateway);
            r.send().await.aws("ec2:CreateRoute").map(|_| ())
        }
    }
}

#[async_trait]
impl ResourceProvider for RouteTableProvider {
    type Resource = RouteTable;

    async fn read(&self, at: Lookup<'_, RouteTable>) -> Found<RouteTable> {
        let (ids, filters) = ids_or_tags(at.id, &at.desired.tags);
        let r = self.0.ec2.describe_route_tables().set_route_table_ids(ids);
        let r = r.set_filters(filters).send().await;
        let Some(t) = first(r.aws("ec2:DescribeRouteTables"), |r| r.route_tables)? else {
            return Ok(None);
        };
        let gateway = t
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(ANYWHERE))
            .and_then(|r| r.gateway_id())
            .unwrap_or_default();
        let subnets: Vec<String> = t
            .associations()
            .iter()
            .filter(|a| !a.main().unwrap_or(false))
            .filter_map(|a| a.subnet_id().map(str::to_string))
            .collect();
        let props = RouteTable {
            vpc_id: Input::Value(t.vpc_id().unwrap_or_default().to_string()),
            gateway_id: Input::Value(gateway.to_string()),
            subnet_ids: same_order(&at.desired.subnet_ids, subnets),
            tags: ec2_tags(t.tags()),
        };
        found(t.route_table_id(), props)
    }

    async fn create(&self, d: &RouteTable) -> Result<Created, ProviderError> {
        let r = self.0.ec2.create_route_table().vpc_id(d.vpc_id.as_str());
        let r = r.tag_specifications(tag_spec(ResourceType::RouteTable, &d.tags));
        let r = r.send().await.aws("ec2:CreateRouteTable")?;
        let id = r.route_table().and_then(|t| t.route_table_id());
        let id = id.unwrap_or_default();
        self.route_to(id, d.gateway_id.as_str(), false).await?;
        for s in &d.subnet_ids {
            self.associate(id, s.as_str()).await?;
        }
        Ok(Created::new(id, id_out(id)))
    }

    async fn update(
        &self,
        id: &str,
        o: &RouteTable,
        d: &RouteTable,
    ) -> Result<Applied, ProviderError> {
        if o.gateway_id != d.gateway_id {
            let exists = !o.gateway_id.as_str().is_empty();
            self.route_to(id, d.gateway_id.as_str(), exists).await?;
        }
        let current = self.associations(id).await?;
        let want: Vec<&str> = d.subnet_ids.iter().map(Input::as_str).collect();
        for (subnet, assoc) in &current {
            if !want.contains(&subnet.as_str()) {
                self.disassociate(assoc).await?;
            }
        }
        for s in want {
            if !current.iter().any(|(c, _)| c == s) {
                self.associate(id, s).await?;
            }
        }
        sync_tags_then_id(&self.0.ec2, id, &o.tags, &d.tags).await
    }

    async fn delete(&self, id: &str, _last: &RouteTable) -> Result<(), ProviderError> {
        let Some(current) = self.associations(id).await.none_if_missing()? else {
            return Ok(());
        };
        for (_, assoc) in &current {
            self.disassociate(assoc).await?;
        }
        let r = self.0.ec2.delete_route_table().route_table_id(id);
        r.send().await.aws("ec2:DeleteRouteTable").missing_ok()
    }
}
