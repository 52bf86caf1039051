//! The cluster description, `cluster.toml` (in `$MOS_HOME`, else `/etc/mos`): the placer,
//! the nodes (name, advertised address, optional listening address, cpus, speed, state
//! directory), the key file and the balancing mode. `shadowd --config`, `placer --config`,
//! `mos node start|stop` and the `mos` commands read it; `mos cluster up` writes one for
//! the localhost cluster it starts.
//!
//! ```toml
//! key = "cluster.key"          # relative paths are against the file's directory
//! balancing = "central"        # central | gossip | off
//! interval_ms = 500
//!
//! [placer]
//! addr = "192.0.2.10:7000"     # where everyone reaches it
//! listen = "0.0.0.0:7000"      # default: addr
//! state_dir = "/var/lib/mos/placer"
//!
//! [[node]]
//! name = "a"
//! addr = "192.0.2.10:7010"     # advertised: where the others reach it
//! listen = "0.0.0.0:7010"      # default: addr
//! cpus = 2                     # default: the online cpus
//! speed = 1.0                  # relative to the reference machine
//! state_dir = "/var/lib/mos/a"
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The cluster key file.
    pub key: PathBuf,
    #[serde(default)]
    pub balancing: Balancing,
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    pub placer: PlacerEntry,
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balancing {
    /// The placer decides moves over every node's reports.
    #[default]
    Central,
    /// Every shadowd decides over the load vectors it hears (MOSIX-style).
    Gossip,
    /// Placement only: nothing moves by itself.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacerEntry {
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default = "default_placer_dir")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

fn default_interval() -> u32 {
    500
}
fn default_speed() -> f64 {
    1.0
}
fn default_placer_dir() -> PathBuf {
    PathBuf::from("/var/lib/mos/placer")
}

impl NodeEntry {
    /// Where the node's shadowd listens.
    pub fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or(&self.addr)
    }
    /// Its state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/mos").join(&self.name))
    }
}

impl PlacerEntry {
    pub fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or(&self.addr)
    }
}

impl ClusterFile {
    /// Parse and check `text` (from `path`, which relative paths are taken against).
    pub fn parse(text: &str, path: &Path) -> Result<ClusterFile, String> {
        let mut f: ClusterFile = toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if f.key.is_relative() {
            f.key = dir.join(&f.key);
        }
        let bad = |m: String| Err(format!("{}: {m}", path.display()));
        let addr_ok = |a: &str| a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !addr_ok(&f.placer.addr) {
            return bad(format!("placer addr {:?} is not HOST:PORT", f.placer.addr));
        }
        if f.nodes.is_empty() {
            return bad("no [[node]]".into());
        }
        let mut seen = std::collections::HashSet::new();
        for n in &f.nodes {
            if n.name.is_empty() || !n.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return bad(format!("node name {:?}: letters, digits, - and _ only", n.name));
            }
            if !seen.insert(n.name.as_str()) {
                return bad(format!("node {} is named twice", n.name));
            }
            if !addr_ok(&n.addr) || n.addr.starts_with("0.0.0.0:") {
                return bad(format!("node {}: addr {:?} is not an address the others can reach (HOST:PORT)", n.name, n.addr));
            }
            if !(n.speed.is_finite() && n.speed > 0.0) {
                return bad(format!("node {}: speed {} is not above 0", n.name, n.speed));
            }
        }
        Ok(f)
    }

    /// Read `path`.
    pub fn load(path: &Path) -> Result<ClusterFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        ClusterFile::parse(&text, path)
    }

    /// The description in effect: `$MOS_HOME/cluster.toml`, else `/etc/mos/cluster.toml`;
    /// None when there is neither.
    pub fn find(mos_home: &Path) -> Option<PathBuf> {
        [mos_home.join("cluster.toml"), PathBuf::from("/etc/mos/cluster.toml")].into_iter().find(|p| p.exists())
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Result<&NodeEntry, String> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| format!("no node {name} in the cluster description (nodes: {})", self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")))
    }

    /// The text of this description.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "key = \"cluster.key\"\nbalancing = \"gossip\"\n[placer]\naddr = \"10.0.0.1:7000\"\nlisten = \"0.0.0.0:7000\"\n[[node]]\nname = \"a\"\naddr = \"10.0.0.1:7010\"\nlisten = \"0.0.0.0:7010\"\ncpus = 4\n[[node]]\nname = \"b\"\naddr = \"10.0.0.2:7010\"\nspeed = 0.5\n";

    #[test]
    fn a_description_reads_and_writes_back() {
        let f = ClusterFile::parse(TWO, Path::new("/etc/mos/cluster.toml")).unwrap();
        assert_eq!(f.key, PathBuf::from("/etc/mos/cluster.key"));
        assert_eq!(f.balancing, Balancing::Gossip);
        assert_eq!(f.placer.listen(), "0.0.0.0:7000");
        assert_eq!(f.node("a").unwrap().listen(), "0.0.0.0:7010");
        assert_eq!(f.node("b").unwrap().listen(), "10.0.0.2:7010");
        assert_eq!(f.node("b").unwrap().state_dir(), PathBuf::from("/var/lib/mos/b"));
        assert!(f.node("c").unwrap_err().contains("nodes: a, b"));
        let again = ClusterFile::parse(&f.to_toml(), Path::new("/x/cluster.toml")).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn bad_descriptions_name_the_problem() {
        let p = Path::new("/etc/mos/cluster.toml");
        for (text, word) in [
            ("key = \"k\"\n[placer]\naddr = \"x\"\n[[node]]\nname = \"a\"\naddr = \"1.2.3.4:1\"\n", "placer addr"),
            ("key = \"k\"\n[placer]\naddr = \"h:1\"\n", "no [[node]]"),
            ("key = \"k\"\n[placer]\naddr = \"h:1\"\n[[node]]\nname = \"a\"\naddr = \"0.0.0.0:1\"\n", "can reach"),
            ("key = \"k\"\n[placer]\naddr = \"h:1\"\n[[node]]\nname = \"a\"\naddr = \"h:2\"\n[[node]]\nname = \"a\"\naddr = \"h:3\"\n", "named twice"),
            ("key = \"k\"\nbogus = 1\n[placer]\naddr = \"h:1\"\n", "bogus"),
            ("key = \"k\"\nbalancing = \"sometimes\"\n[placer]\naddr = \"h:1\"\n", "sometimes"),
        ] {
            let e = ClusterFile::parse(text, p).unwrap_err();
            assert!(e.contains(word) && e.contains("cluster.toml"), "{word}: {e}");
        }
    }
}
