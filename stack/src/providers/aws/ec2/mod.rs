//! EC2 networking: a VPC, its subnets, an internet gateway and a route table. AWS
//! assigns the ids; resources made by an interrupted run are adopted by their stack
//! and resource tags.

mod internet_gateway;
mod route_table;
mod subnet;
mod vpc;

pub use internet_gateway::{InternetGateway, InternetGatewayProvider};
pub use route_table::{RouteTable, RouteTableProvider};
pub use subnet::{Subnet, SubnetProvider};
pub use vpc::{Vpc, VpcProvider};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use std::time::Duration;

use super::{AwsResult, Missing, Outputs, Tagging, Tags, obj, retry_on};
use crate::engine::{TAG_RESOURCE, TAG_STACK};
use crate::error::ProviderError;
use crate::providers::{Applied, Checks, Found, Read};

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

/// The `cidr_block` rule of VPCs and subnets: a CIDR [`valid_cidr`] accepts.
fn check_cidr(c: Checks, cidr: &str) -> Checks {
    c.require(valid_cidr(cidr), || {
        format!("cidr_block `{cidr}` is not an IPv4 CIDR with /16../28")
    })
}

fn ec2_tag(k: &str, v: Option<&str>) -> Tag {
    Tag::builder()
        .key(k)
        .set_value(v.map(str::to_string))
        .build()
}

/// Tags on create (EC2 tags in the create call itself).
fn tag_spec(rt: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(
            tags.iter().map(|(k, v)| ec2_tag(k, Some(v))).collect(),
        ))
        .build()
}

/// Observed EC2 tags as [`Tags`].
fn ec2_tags(t: &[Tag]) -> Tags {
    super::user_tags(t.iter().map(|t| {
        (
            t.key().unwrap_or_default().to_string(),
            t.value().unwrap_or_default().to_string(),
        )
    }))
}

/// The filters finding what this stack made for a resource (adoption by tags).
fn by_tags(tags: &Tags) -> Vec<Filter> {
    [TAG_STACK, TAG_RESOURCE]
        .iter()
        .filter_map(|k| {
            tags.get(*k)
                .map(|v| Filter::builder().name(format!("tag:{k}")).values(v).build())
        })
        .collect()
}

/// The outputs of every EC2 resource: its id.
fn id_out(id: &str) -> Outputs {
    obj(serde_json::json!({ "id": id }))
}

/// The end of every EC2 update: the tags brought from `old` to `new` (EC2 tags by
/// id), and the id as the outputs.
async fn sync_tags_then_id(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    old: &Tags,
    new: &Tags,
) -> Result<Applied, ProviderError> {
    super::sync_tags(ec2, id, old, new).await?;
    Ok(id_out(id).into())
}

/// What an EC2 describe call asks for (its `ids` and `filters`): the id in state, or
/// else the resource this stack made, by its tags (adopting what an interrupted run
/// made).
fn ids_or_tags(id: Option<&str>, tags: &Tags) -> (Option<Vec<String>>, Option<Vec<Filter>>) {
    match id {
        Some(id) => (Some(vec![id.to_string()]), None),
        None => (None, Some(by_tags(tags))),
    }
}

/// The first item an EC2 describe call found (`items` takes them from its answer):
/// none when it found nothing or the id it asked for does not exist.
fn first<O, T>(
    answer: Result<O, ProviderError>,
    items: impl FnOnce(O) -> Option<Vec<T>>,
) -> Result<Option<T>, ProviderError> {
    let all = answer.none_if_missing()?.and_then(items);
    Ok(all.and_then(|v| v.into_iter().next()))
}

/// What an EC2 read found: the resource with id `id` (none: empty) and its outputs.
fn found<R>(id: Option<&str>, props: R) -> Found<R> {
    let id = id.unwrap_or_default();
    Ok(Some(Read {
        id: id.to_string(),
        props,
        outputs: id_out(id),
    }))
}

fn dependency_violation(e: &ProviderError) -> bool {
    e.code() == Some("DependencyViolation")
}

/// Runs a delete call, retrying `DependencyViolation` for a while: network interfaces
/// left by EKS are released asynchronously, which must not fail the teardown. Already
/// gone is success.
async fn delete_when_free<F, Fut>(f: F) -> Result<(), ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ProviderError>>,
{
    retry_on(Duration::from_secs(300), dependency_violation, f)
        .await
        .missing_ok()
}

/// EC2 tags by resource id.
#[async_trait]
impl Tagging for aws_sdk_ec2::Client {
    async fn tags(&self, id: &str) -> Result<Tags, ProviderError> {
        let f = Filter::builder().name("resource-id").values(id).build();
        let r = self.describe_tags().filters(f).send().await;
        let r = r.aws("ec2:DescribeTags")?;
        Ok(super::user_tags(r.tags().iter().map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })))
    }
    async fn tag(&self, id: &str, tags: Tags) -> Result<(), ProviderError> {
        let tags = tags.iter().map(|(k, v)| ec2_tag(k, Some(v))).collect();
        let r = self.create_tags().resources(id).set_tags(Some(tags));
        r.send().await.aws("ec2:CreateTags").map(|_| ())
    }
    async fn untag(&self, id: &str, keys: Vec<String>) -> Result<(), ProviderError> {
        let tags = keys.iter().map(|k| ec2_tag(k, None)).collect();
        let r = self.delete_tags().resources(id).set_tags(Some(tags));
        r.send().await.aws("ec2:DeleteTags").map(|_| ())
    }
}
