//! Job identifiers: HTCondor's `cluster.proc`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `cluster.proc`: the cluster is one submission, proc its `$(Process)` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId {
    pub cluster: u64,
    pub proc: u32,
}

impl JobId {
    pub fn new(cluster: u64, proc: u32) -> Self {
        JobId { cluster, proc }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.cluster, self.proc)
    }
}

/// A string that is not `CLUSTER.PROC`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a job id; write CLUSTER.PROC, e.g. 12.0")]
pub struct BadJobId(pub String);

impl FromStr for JobId {
    type Err = BadJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadJobId(s.to_owned());
        let (c, p) = s.trim().split_once('.').ok_or_else(bad)?;
        Ok(JobId {
            cluster: c.parse().map_err(|_| bad())?,
            proc: p.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = JobId::new(12, 3);
        assert_eq!(id.to_string(), "12.3");
        assert_eq!("12.3".parse::<JobId>(), Ok(id));
        assert_eq!(" 7.0 ".parse::<JobId>(), Ok(JobId::new(7, 0)));
    }

    #[test]
    fn rejects_malformed_ids() {
        for s in ["12", "a.b", "1.-1", "1.2.3", "", ".1"] {
            let e = s.parse::<JobId>().unwrap_err();
            assert!(e.to_string().contains("CLUSTER.PROC"), "{s}: {e}");
        }
    }

    #[test]
    fn orders_by_cluster_then_proc() {
        assert!(JobId::new(1, 9) < JobId::new(2, 0));
        assert!(JobId::new(2, 1) < JobId::new(2, 10));
    }
}
