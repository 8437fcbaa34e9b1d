//! EC2 networking: a VPC and its subnets. AWS assigns the ids; resources made by an
//! interrupted run are adopted by their stack and resource tags.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::{Clients, Tags, api, none_if_missing, obj, ok_if_missing, tag_delta};
use crate::engine::{Input, Resource, TAG_RESOURCE, TAG_STACK};
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name of [`Vpc`].
pub const VPC_KIND: &str = "aws:ec2:Vpc";
/// Kind name of [`Subnet`].
pub const SUBNET_KIND: &str = "aws:ec2:Subnet";
/// Kind name of [`InternetGateway`].
pub const IGW_KIND: &str = "aws:ec2:InternetGateway";
/// Kind name of [`RouteTable`].
pub const ROUTE_TABLE_KIND: &str = "aws:ec2:RouteTable";

/// A VPC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vpc {
    /// IPv4 CIDR (forces replacement).
    pub cidr_block: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// A subnet in one availability zone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subnet {
    /// VPC id.
    pub vpc_id: Input<String>,
    /// IPv4 CIDR.
    pub cidr_block: String,
    /// Availability zone, e.g. `us-east-1a`.
    pub availability_zone: String,
    /// Give instances launched here a public IP (nodes in public subnets need it).
    #[serde(default)]
    pub map_public_ip_on_launch: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// Checks an IPv4 CIDR like `10.0.0.0/16`.
pub fn valid_cidr(c: &str) -> bool {
    let Some((ip, bits)) = c.split_once('/') else {
        return false;
    };
    let octets: Vec<&str> = ip.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| o.parse::<u8>().is_ok())
        && bits.parse::<u8>().is_ok_and(|b| (16..=28).contains(&b))
}

impl Resource for Vpc {
    const KIND: &'static str = VPC_KIND;
    fn validate(&self) -> Vec<String> {
        if valid_cidr(&self.cidr_block) {
            vec![]
        } else {
            vec![format!(
                "cidr_block `{}` is not an IPv4 CIDR with /16../28",
                self.cidr_block
            )]
        }
    }
}

impl Resource for Subnet {
    const KIND: &'static str = SUBNET_KIND;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        if !valid_cidr(&self.cidr_block) {
            e.push(format!(
                "cidr_block `{}` is not an IPv4 CIDR with /16../28",
                self.cidr_block
            ));
        }
        if self.availability_zone.is_empty() {
            e.push("availability_zone must not be empty".into());
        }
        e
    }
}

fn tag_spec(rt: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn ec2_tags(t: &[Tag]) -> Tags {
    super::user_tags(t.iter().map(|t| {
        (
            t.key().unwrap_or_default().to_string(),
            t.value().unwrap_or_default().to_string(),
        )
    }))
}

fn by_tags(tags: &Tags) -> Vec<Filter> {
    [TAG_STACK, TAG_RESOURCE]
        .iter()
        .filter_map(|k| {
            tags.get(*k)
                .map(|v| Filter::builder().name(format!("tag:{k}")).values(v).build())
        })
        .collect()
}

async fn retag(c: &Clients, id: &str, old: &Tags, new: &Tags) -> Result<(), ProviderError> {
    let (set, rm) = tag_delta(old, new);
    if !set.is_empty() {
        let tags = set
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let r = c
            .ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(tags))
            .send()
            .await;
        r.map_err(|e| api("ec2:CreateTags", e))?;
    }
    if !rm.is_empty() {
        let tags = rm.iter().map(|k| Tag::builder().key(k).build()).collect();
        let r = c
            .ec2
            .delete_tags()
            .resources(id)
            .set_tags(Some(tags))
            .send()
            .await;
        r.map_err(|e| api("ec2:DeleteTags", e))?;
    }
    Ok(())
}

fn id_out(id: &str) -> Map<String, Value> {
    obj(json!({ "id": id }))
}

fn dependency_violation(e: &ProviderError) -> bool {
    e.code() == Some("DependencyViolation")
}

/// Provider for [`Vpc`].
pub struct VpcProvider(pub Arc<Clients>);

#[async_trait]
impl Provider for VpcProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["cidr_block"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Vpc = props(desired)?;
        let mut req = self.0.ec2.describe_vpcs();
        req = match id {
            Some(id) => req.vpc_ids(id),
            None => req.set_filters(Some(by_tags(&d.tags))),
        };
        let Some(r) = none_if_missing(req.send().await.map_err(|e| api("ec2:DescribeVpcs", e)))?
        else {
            return Ok(None);
        };
        let Some(v) = r.vpcs().first() else {
            return Ok(None);
        };
        let id = v.vpc_id().unwrap_or_default().to_string();
        let obs = Vpc {
            cidr_block: v.cidr_block().unwrap_or_default().to_string(),
            tags: ec2_tags(v.tags()),
        };
        Ok(Some(Observed {
            id: id.clone(),
            props: to_value(&obs)?,
            outputs: id_out(&id),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Vpc = props(desired)?;
        let r = self
            .0
            .ec2
            .create_vpc()
            .cidr_block(&d.cidr_block)
            .tag_specifications(tag_spec(ResourceType::Vpc, &d.tags))
            .send()
            .await
            .map_err(|e| api("ec2:CreateVpc", e))?;
        let id = r
            .vpc()
            .and_then(|v| v.vpc_id())
            .unwrap_or_default()
            .to_string();
        Ok(Observed {
            id: id.clone(),
            props: desired.clone(),
            outputs: id_out(&id),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Vpc = props(observed)?;
        let d: Vpc = props(desired)?;
        retag(&self.0, id, &o.tags, &d.tags).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: id_out(id),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        // Network interfaces left by EKS are released asynchronously: retry the
        // DependencyViolation for a while instead of failing the teardown.
        let r = super::retry_on(Duration::from_secs(300), dependency_violation, || async {
            let r = self.0.ec2.delete_vpc().vpc_id(id).send().await;
            r.map(|_| ()).map_err(|e| api("ec2:DeleteVpc", e))
        })
        .await;
        ok_if_missing(r)
    }
}

/// Provider for [`Subnet`].
pub struct SubnetProvider(pub Arc<Clients>);

impl SubnetProvider {
    async fn set_public_ip(&self, id: &str, on: bool) -> Result<(), ProviderError> {
        let v = aws_sdk_ec2::types::AttributeBooleanValue::builder()
            .value(on)
            .build();
        let r = self
            .0
            .ec2
            .modify_subnet_attribute()
            .subnet_id(id)
            .map_public_ip_on_launch(v)
            .send()
            .await;
        r.map(|_| ())
            .map_err(|e| api("ec2:ModifySubnetAttribute", e))
    }
}

#[async_trait]
impl Provider for SubnetProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["vpc_id", "cidr_block", "availability_zone"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Subnet = props(desired)?;
        let mut req = self.0.ec2.describe_subnets();
        req = match id {
            Some(id) => req.subnet_ids(id),
            None => req.set_filters(Some(by_tags(&d.tags))),
        };
        let Some(r) = none_if_missing(req.send().await.map_err(|e| api("ec2:DescribeSubnets", e)))?
        else {
            return Ok(None);
        };
        let Some(s) = r.subnets().first() else {
            return Ok(None);
        };
        let id = s.subnet_id().unwrap_or_default().to_string();
        let obs = Subnet {
            vpc_id: Input::Value(s.vpc_id().unwrap_or_default().to_string()),
            cidr_block: s.cidr_block().unwrap_or_default().to_string(),
            availability_zone: s.availability_zone().unwrap_or_default().to_string(),
            map_public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
            tags: ec2_tags(s.tags()),
        };
        Ok(Some(Observed {
            id: id.clone(),
            props: to_value(&obs)?,
            outputs: id_out(&id),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Subnet = props(desired)?;
        let r = self
            .0
            .ec2
            .create_subnet()
            .vpc_id(d.vpc_id.as_str())
            .cidr_block(&d.cidr_block)
            .availability_zone(&d.availability_zone)
            .tag_specifications(tag_spec(ResourceType::Subnet, &d.tags))
            .send()
            .await
            .map_err(|e| api("ec2:CreateSubnet", e))?;
        let id = r
            .subnet()
            .and_then(|s| s.subnet_id())
            .unwrap_or_default()
            .to_string();
        if d.map_public_ip_on_launch {
            self.set_public_ip(&id, true).await?;
        }
        Ok(Observed {
            id: id.clone(),
            props: desired.clone(),
            outputs: id_out(&id),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Subnet = props(observed)?;
        let d: Subnet = props(desired)?;
        if o.map_public_ip_on_launch != d.map_public_ip_on_launch {
            self.set_public_ip(id, d.map_public_ip_on_launch).await?;
        }
        retag(&self.0, id, &o.tags, &d.tags).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: id_out(id),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let r = super::retry_on(Duration::from_secs(300), dependency_violation, || async {
            let r = self.0.ec2.delete_subnet().subnet_id(id).send().await;
            r.map(|_| ()).map_err(|e| api("ec2:DeleteSubnet", e))
        })
        .await;
        ok_if_missing(r)
    }
}

/// An internet gateway attached to a VPC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InternetGateway {
    /// The VPC it is attached to (forces replacement).
    pub vpc_id: Input<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for InternetGateway {
    const KIND: &'static str = IGW_KIND;
    fn validate(&self) -> Vec<String> {
        vec![]
    }
}

/// A route table with a default route to an internet gateway, associated with subnets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteTable {
    /// VPC id (forces replacement).
    pub vpc_id: Input<String>,
    /// Target of the `0.0.0.0/0` route.
    pub gateway_id: Input<String>,
    /// Associated subnets.
    pub subnet_ids: Vec<Input<String>>,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for RouteTable {
    const KIND: &'static str = ROUTE_TABLE_KIND;
    fn validate(&self) -> Vec<String> {
        vec![]
    }
}

/// Provider for [`InternetGateway`].
pub struct InternetGatewayProvider(pub Arc<Clients>);

#[async_trait]
impl Provider for InternetGatewayProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["vpc_id"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: InternetGateway = props(desired)?;
        let mut req = self.0.ec2.describe_internet_gateways();
        req = match id {
            Some(id) => req.internet_gateway_ids(id),
            None => req.set_filters(Some(by_tags(&d.tags))),
        };
        let Some(r) = none_if_missing(
            req.send()
                .await
                .map_err(|e| api("ec2:DescribeInternetGateways", e)),
        )?
        else {
            return Ok(None);
        };
        let Some(g) = r.internet_gateways().first() else {
            return Ok(None);
        };
        let id = g.internet_gateway_id().unwrap_or_default().to_string();
        let vpc = g
            .attachments()
            .first()
            .and_then(|a| a.vpc_id())
            .unwrap_or_default();
        let obs = InternetGateway {
            vpc_id: Input::Value(vpc.to_string()),
            tags: ec2_tags(g.tags()),
        };
        Ok(Some(Observed {
            id: id.clone(),
            props: to_value(&obs)?,
            outputs: id_out(&id),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: InternetGateway = props(desired)?;
        let r = self
            .0
            .ec2
            .create_internet_gateway()
            .tag_specifications(tag_spec(ResourceType::InternetGateway, &d.tags))
            .send()
            .await
            .map_err(|e| api("ec2:CreateInternetGateway", e))?;
        let id = r
            .internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .unwrap_or_default()
            .to_string();
        let a = self
            .0
            .ec2
            .attach_internet_gateway()
            .internet_gateway_id(&id)
            .vpc_id(d.vpc_id.as_str())
            .send()
            .await;
        a.map_err(|e| api("ec2:AttachInternetGateway", e))?;
        Ok(Observed {
            id: id.clone(),
            props: desired.clone(),
            outputs: id_out(&id),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: InternetGateway = props(observed)?;
        let d: InternetGateway = props(desired)?;
        retag(&self.0, id, &o.tags, &d.tags).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: id_out(id),
        })
    }

    async fn delete(&self, id: &str, props_: &Value) -> Result<(), ProviderError> {
        if let Some(vpc) = props_
            .get("vpc_id")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            let r = super::retry_on(Duration::from_secs(300), dependency_violation, || async {
                let r = self
                    .0
                    .ec2
                    .detach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(vpc)
                    .send()
                    .await;
                r.map(|_| ())
                    .map_err(|e| api("ec2:DetachInternetGateway", e))
            })
            .await;
            match r {
                Err(e) if e.is_not_found() || e.code() == Some("Gateway.NotAttached") => {}
                r => r?,
            }
        }
        let r = self
            .0
            .ec2
            .delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await;
        ok_if_missing(
            r.map(|_| ())
                .map_err(|e| api("ec2:DeleteInternetGateway", e)),
        )
    }
}

/// Provider for [`RouteTable`].
pub struct RouteTableProvider(pub Arc<Clients>);

impl RouteTableProvider {
    async fn associations(&self, id: &str) -> Result<Vec<(String, String)>, ProviderError> {
        let r = self
            .0
            .ec2
            .describe_route_tables()
            .route_table_ids(id)
            .send()
            .await;
        let r = r.map_err(|e| api("ec2:DescribeRouteTables", e))?;
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
        let r = self
            .0
            .ec2
            .associate_route_table()
            .route_table_id(id)
            .subnet_id(subnet)
            .send()
            .await;
        r.map(|_| ()).map_err(|e| api("ec2:AssociateRouteTable", e))
    }

    async fn disassociate(&self, assoc: &str) -> Result<(), ProviderError> {
        let r = self
            .0
            .ec2
            .disassociate_route_table()
            .association_id(assoc)
            .send()
            .await;
        ok_if_missing(
            r.map(|_| ())
                .map_err(|e| api("ec2:DisassociateRouteTable", e)),
        )
    }
}

#[async_trait]
impl Provider for RouteTableProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["vpc_id"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: RouteTable = props(desired)?;
        let mut req = self.0.ec2.describe_route_tables();
        req = match id {
            Some(id) => req.route_table_ids(id),
            None => req.set_filters(Some(by_tags(&d.tags))),
        };
        let Some(r) = none_if_missing(
            req.send()
                .await
                .map_err(|e| api("ec2:DescribeRouteTables", e)),
        )?
        else {
            return Ok(None);
        };
        let Some(t) = r.route_tables().first() else {
            return Ok(None);
        };
        let id = t.route_table_id().unwrap_or_default().to_string();
        let gateway = t
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .and_then(|r| r.gateway_id())
            .unwrap_or_default();
        let subnets: Vec<String> = t
            .associations()
            .iter()
            .filter(|a| !a.main().unwrap_or(false))
            .filter_map(|a| a.subnet_id().map(str::to_string))
            .collect();
        let obs = RouteTable {
            vpc_id: Input::Value(t.vpc_id().unwrap_or_default().to_string()),
            gateway_id: Input::Value(gateway.to_string()),
            subnet_ids: super::eks::same_order(&d.subnet_ids, subnets),
            tags: ec2_tags(t.tags()),
        };
        Ok(Some(Observed {
            id: id.clone(),
            props: to_value(&obs)?,
            outputs: id_out(&id),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: RouteTable = props(desired)?;
        let r = self
            .0
            .ec2
            .create_route_table()
            .vpc_id(d.vpc_id.as_str())
            .tag_specifications(tag_spec(ResourceType::RouteTable, &d.tags))
            .send()
            .await
            .map_err(|e| api("ec2:CreateRouteTable", e))?;
        let id = r
            .route_table()
            .and_then(|t| t.route_table_id())
            .unwrap_or_default()
            .to_string();
        let r = self
            .0
            .ec2
            .create_route()
            .route_table_id(&id)
            .destination_cidr_block("0.0.0.0/0")
            .gateway_id(d.gateway_id.as_str())
            .send()
            .await;
        r.map_err(|e| api("ec2:CreateRoute", e))?;
        for s in &d.subnet_ids {
            self.associate(&id, s.as_str()).await?;
        }
        Ok(Observed {
            id: id.clone(),
            props: desired.clone(),
            outputs: id_out(&id),
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: RouteTable = props(observed)?;
        let d: RouteTable = props(desired)?;
        if o.gateway_id != d.gateway_id {
            let r = if o.gateway_id.as_str().is_empty() {
                let r = self
                    .0
                    .ec2
                    .create_route()
                    .route_table_id(id)
                    .destination_cidr_block("0.0.0.0/0");
                r.gateway_id(d.gateway_id.as_str())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api("ec2:CreateRoute", e))
            } else {
                let r = self
                    .0
                    .ec2
                    .replace_route()
                    .route_table_id(id)
                    .destination_cidr_block("0.0.0.0/0");
                r.gateway_id(d.gateway_id.as_str())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| api("ec2:ReplaceRoute", e))
            };
            r?;
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
        retag(&self.0, id, &o.tags, &d.tags).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: id_out(id),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let current = match self.associations(id).await {
            Err(e) if e.is_not_found() => return Ok(()),
            r => r?,
        };
        for (_, assoc) in &current {
            self.disassociate(assoc).await?;
        }
        let r = self
            .0
            .ec2
            .delete_route_table()
            .route_table_id(id)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("ec2:DeleteRouteTable", e)))
    }
}
