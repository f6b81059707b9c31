//! [`RedisCluster`]: a Redis Cluster of the test's own: three primaries on free loopback
//! ports, the 16,384 slots split between them, for tests of a fleet on a cluster.

use std::path::PathBuf;
use std::time::Duration;

use super::{RedisServer, command, free_port};

/// Three redis-servers in cluster mode, one third of the slots each, killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// Its nodes.
    pub nodes: Vec<RedisServer>,
}

/// Where a node on `port` keeps its cluster config file.
fn config_file(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("tollgate-test-nodes-{port}.conf"))
}

impl RedisCluster {
    /// Starts three nodes, gives each a third of the slots, joins them, and waits until the
    /// cluster says it is ok.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed, or the cluster is not ok within 30 s.
    pub fn start() -> Self {
        let buses: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes: Vec<RedisServer> = buses
            .iter()
            .map(|bus| {
                let port = free_port();
                // A node's config file names the cluster it was in: a fresh one each time.
                let file = config_file(port);
                let _ = std::fs::remove_file(&file);
                RedisServer::start_on(
                    port,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        file.display().to_string(),
                        // Not the default port + 10000: past 65535 for a high free port.
                        "--cluster-port".into(),
                        bus.to_string(),
                    ],
                )
            })
            .collect();
        let slots = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (first, last)) in nodes.iter().zip(slots) {
            let (first, last) = (first.to_string(), last.to_string());
            let added = command(node.port, &["CLUSTER", "ADDSLOTSRANGE", &first, &last]);
            assert_eq!(added, "+OK", "node {}: {added}", node.port);
        }
        for (node, bus) in nodes.iter().zip(&buses).skip(1) {
            let (port, bus) = (node.port.to_string(), bus.to_string());
            let met = command(
                nodes[0].port,
                &["CLUSTER", "MEET", "127.0.0.1", &port, &bus],
            );
            assert_eq!(met, "+OK", "meet {}: {met}", node.port);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ok = |node: &RedisServer| {
            command(node.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                && command(node.port, &["CLUSTER", "NODES"]).lines().count() == 3
        };
        while !nodes.iter().all(ok) {
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster is not ok: {}",
                command(nodes[0].port, &["CLUSTER", "INFO"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    /// `redis+cluster://127.0.0.1:{port of the first node}`: the others are found from it.
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The keys matching `pattern` on every node, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.nodes.iter().flat_map(|n| n.keys(pattern)).collect();
        keys.sort();
        keys
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
            let _ = std::fs::remove_file(config_file(node.port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_share_the_slots() {
        let cluster = RedisCluster::start();
        let info = command(cluster.nodes[2].port, &["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
    }
}
