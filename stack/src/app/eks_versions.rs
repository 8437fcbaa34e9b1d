//! Kubernetes minor versions on EKS and their support windows, so the default is one
//! in standard support and a configured version past it is called out before a
//! cluster is made with it.
//!
//! EKS gives each minor version 14 months of standard support from its EKS release,
//! then 12 months of extended support at an extra cost per cluster hour, then upgrades
//! the cluster itself (EKS user guide, "Understand the Kubernetes version lifecycle on
//! EKS": <https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html>).
//! Dates from <https://endoflife.date/amazon-eks> (which follows that guide's release
//! calendar), read 2026-12-07.
//!
//! **When to bump**: `DEFAULT` (1.35) leaves standard support on 2027-03-27. Before
//! then, add the newer versions with their dates and move `DEFAULT` to the newest one
//! EKS offers; `default_is_in_standard_support` pins the reading date.

use k8s_openapi::jiff::civil::{Date, date};

/// The version new clusters get (`eks.version`).
pub const DEFAULT: &str = "1.35";

/// One minor version's dates on EKS.
#[derive(Debug, Clone, Copy)]
pub struct EksVersion {
    pub version: &'static str,
    pub released: Date,
    pub end_of_standard: Date,
    pub end_of_extended: Date,
}

/// Newest first.
#[rustfmt::skip]
pub const VERSIONS: &[EksVersion] = &[
    v("1.35", date(2026, 1, 28), date(2027, 3, 27), date(2028, 3, 27)),
    v("1.34", date(2025, 10, 6), date(2026, 12, 2), date(2027, 12, 2)),
    v("1.33", date(2025, 5, 28), date(2026, 7, 29), date(2027, 7, 29)),
    v("1.32", date(2025, 1, 25), date(2026, 3, 23), date(2027, 3, 23)),
    v("1.31", date(2024, 9, 26), date(2025, 11, 26), date(2026, 11, 26)),
    v("1.30", date(2024, 5, 23), date(2025, 7, 23), date(2026, 7, 23)),
];

const fn v(version: &'static str, released: Date, standard: Date, extended: Date) -> EksVersion {
    EksVersion {
        version,
        released,
        end_of_standard: standard,
        end_of_extended: extended,
    }
}

/// Where a version stands on a given day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// In standard support.
    Standard,
    /// Past standard support: extended support (extra cost) until the date.
    Extended { ended: Date, until: Date },
    /// Past extended support: EKS upgrades such clusters itself.
    Ended { on: Date },
    /// Not in the table (newer than it, or not an EKS version): not checked.
    Unknown,
}

/// Where `version` stands on `today`.
pub fn support(version: &str, today: Date) -> Support {
    let Some(v) = VERSIONS.iter().find(|v| v.version == version) else {
        return Support::Unknown;
    };
    if today <= v.end_of_standard {
        Support::Standard
    } else if today <= v.end_of_extended {
        Support::Extended {
            ended: v.end_of_standard,
            until: v.end_of_extended,
        }
    } else {
        Support::Ended {
            on: v.end_of_extended,
        }
    }
}

/// Today in UTC.
pub fn today() -> Date {
    k8s_openapi::jiff::Timestamp::now()
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .date()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_in_standard_support() {
        // The table's reading date; see the module doc for when to bump.
        assert_eq!(support(DEFAULT, date(2026, 12, 7)), Support::Standard);
        assert_eq!(
            VERSIONS[0].version, DEFAULT,
            "the default is the newest known"
        );
    }

    #[test]
    fn versions_age_through_standard_extended_and_ended() {
        assert_eq!(support("1.31", date(2025, 11, 26)), Support::Standard);
        assert_eq!(
            support("1.31", date(2025, 11, 27)),
            Support::Extended {
                ended: date(2025, 11, 26),
                until: date(2026, 11, 26)
            }
        );
        assert_eq!(
            support("1.31", date(2026, 12, 7)),
            Support::Ended {
                on: date(2026, 11, 26)
            }
        );
        assert_eq!(support("1.99", date(2026, 12, 7)), Support::Unknown);
    }
}
