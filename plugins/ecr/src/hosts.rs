//! Which hosts are ECR registries, and what their names say.
//!
//! A private registry's host carries its account and region:
//! `<account>.dkr.ecr[-fips].<region>.<partition domain>`, or the dual-stack
//! `<account>.dkr-ecr[-fips].<region>.on.aws`. ECR Public has two fixed hosts
//! and lives in us-east-1. The whole host must match: a lookalike such as
//! `<account>.dkr.ecr.us-east-1.amazonaws.com.evil.io` is not ECR, and the
//! node's credentials must never be sent for it.

/// Partition domains of the classic private endpoints: commercial, China, the
/// EU sovereign cloud and the ISO partitions.
const PRIVATE_DOMAINS: &[&str] = &[
    "amazonaws.com",
    "amazonaws.com.cn",
    "amazonaws.eu",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

/// Partition domains of the dual-stack private endpoints.
const DUAL_STACK_DOMAINS: &[&str] = &["on.aws", "on.amazonwebservices.com.cn"];

/// ECR Public's hosts: the classic one and the dual-stack one.
pub const PUBLIC_HOSTS: &[&str] = &["public.ecr.aws", "ecr-public.aws.com"];

/// ECR Public's only region.
pub const PUBLIC_REGION: &str = "us-east-1";

/// What the plugin says when a host is not ECR.
pub const EXPECTED: &str = "expected <12-digit account>.dkr.ecr.<region>.amazonaws.com (or a FIPS, dual-stack, China, EU or ISO variant), public.ecr.aws or ecr-public.aws.com";

/// An ECR registry, as its host names it (and as it enters the cache key).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum EcrRegistry {
    Private { account: String, region: String, fips: bool, dual_stack: bool },
    Public { dual_stack: bool },
}

impl EcrRegistry {
    /// Recognizes an ECR host (already lower-cased, without a port).
    pub fn from_host(host: &str) -> Option<EcrRegistry> {
        if let Some(i) = PUBLIC_HOSTS.iter().position(|h| *h == host) {
            return Some(EcrRegistry::Public { dual_stack: i == 1 });
        }
        let mut labels = host.splitn(3, '.');
        let (account, service, rest) = (labels.next()?, labels.next()?, labels.next()?);
        let (fips, dual_stack, region_and_domain, domains) = match service {
            "dkr" => match rest.split_once('.')? {
                ("ecr", rest) => (false, false, rest, PRIVATE_DOMAINS),
                ("ecr-fips", rest) => (true, false, rest, PRIVATE_DOMAINS),
                _ => return None,
            },
            "dkr-ecr" => (false, true, rest, DUAL_STACK_DOMAINS),
            "dkr-ecr-fips" => (true, true, rest, DUAL_STACK_DOMAINS),
            _ => return None,
        };
        let (region, domain) = region_and_domain.split_once('.')?;
        (domains.contains(&domain) && valid(account, region)).then(|| EcrRegistry::Private {
            account: account.to_string(),
            region: region.to_string(),
            fips,
            dual_stack,
        })
    }

    /// The region whose endpoints serve this registry.
    pub fn region(&self) -> &str {
        match self {
            EcrRegistry::Private { region, .. } => region,
            EcrRegistry::Public { .. } => PUBLIC_REGION,
        }
    }

    /// The partition of its ARNs (`aws`, `aws-cn`, `aws-us-gov`, the ISO
    /// partitions, the EU sovereign cloud), from the region's name.
    pub fn partition(&self) -> &'static str {
        const PARTITIONS: &[(&str, &str)] = &[
            ("cn-", "aws-cn"),
            ("us-gov-", "aws-us-gov"),
            ("us-isob-", "aws-iso-b"),
            ("us-isof-", "aws-iso-f"),
            ("us-iso-", "aws-iso"),
            ("eu-isoe-", "aws-iso-e"),
            ("eusc-", "aws-eusc"),
        ];
        let region = self.region();
        PARTITIONS.iter().find(|(prefix, _)| region.starts_with(prefix)).map_or("aws", |(_, partition)| partition)
    }
}

/// An account is exactly 12 digits; a region is lower-case letters, digits and
/// dashes, starting with a letter (`us-east-1`, `cn-north-1`, `us-iso-east-1`).
fn valid(account: &str, region: &str) -> bool {
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && region.len() <= 32
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region.contains('-')
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(host: &str) -> (String, String, bool, bool) {
        match EcrRegistry::from_host(host) {
            Some(EcrRegistry::Private { account, region, fips, dual_stack }) => (account, region, fips, dual_stack),
            other => panic!("{host}: {other:?}"),
        }
    }

    #[test]
    fn partitions_follow_the_region() {
        for (host, partition) in [
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com", "aws"),
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "aws-cn"),
            ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "aws-us-gov"),
            ("123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov", "aws-iso"),
            ("123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov", "aws-iso-b"),
            ("123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk", "aws-iso-e"),
            ("123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov", "aws-iso-f"),
            ("123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu", "aws-eusc"),
        ] {
            assert_eq!(EcrRegistry::from_host(host).map(|r| r.partition()), Some(partition), "{host}");
        }
    }

    #[test]
    fn private_hosts_in_every_partition() {
        let a = "123456789012";
        assert_eq!(
            private(&format!("{a}.dkr.ecr.us-east-1.amazonaws.com")),
            (a.into(), "us-east-1".into(), false, false)
        );
        assert!(private(&format!("{a}.dkr.ecr-fips.us-gov-west-1.amazonaws.com")).2);
        assert_eq!(private(&format!("{a}.dkr.ecr.cn-north-1.amazonaws.com.cn")).1, "cn-north-1");
        assert_eq!(private(&format!("{a}.dkr.ecr.eusc-de-east-1.amazonaws.eu")).1, "eusc-de-east-1");
        assert_eq!(private(&format!("{a}.dkr.ecr.us-iso-east-1.c2s.ic.gov")).1, "us-iso-east-1");
        assert_eq!(private(&format!("{a}.dkr.ecr.us-isob-east-1.sc2s.sgov.gov")).1, "us-isob-east-1");
        assert_eq!(private(&format!("{a}.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk")).1, "eu-isoe-west-1");
        assert_eq!(private(&format!("{a}.dkr.ecr.us-isof-south-1.csp.hci.ic.gov")).1, "us-isof-south-1");
        assert_eq!(private(&format!("{a}.dkr-ecr.eu-west-1.on.aws")), (a.into(), "eu-west-1".into(), false, true));
        assert!(private(&format!("{a}.dkr-ecr-fips.us-east-1.on.aws")).2);
        assert!(private(&format!("{a}.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn")).3);
    }

    #[test]
    fn public_hosts() {
        assert_eq!(EcrRegistry::from_host("public.ecr.aws"), Some(EcrRegistry::Public { dual_stack: false }));
        assert_eq!(EcrRegistry::from_host("ecr-public.aws.com"), Some(EcrRegistry::Public { dual_stack: true }));
        assert_eq!(EcrRegistry::Public { dual_stack: false }.region(), "us-east-1");
    }

    #[test]
    fn lookalikes_and_malformed_hosts_are_not_ecr() {
        for host in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io",
            "evil.io",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "12345678901a.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.org",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.dkr.ecr.useast1.amazonaws.com",
            "123456789012.dkr.ecs.us-east-1.amazonaws.com",
            "123456789012.dkr-ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.on.aws",
            "123456789012.dkr-ecr.us-east-1.on.aws.evil.io",
            "x.public.ecr.aws",
            "public.ecr.aws.evil.io",
            "dkr.ecr.us-east-1.amazonaws.com",
        ] {
            assert_eq!(EcrRegistry::from_host(host), None, "{host}");
        }
    }
}
