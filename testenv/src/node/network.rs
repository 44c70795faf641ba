//! The real node's network: one network namespace per environment, joined to the host by a veth
//! pair, and the addresses derived from the environment's slot.
//!
//! A slot `n` (0..[`SLOTS`]) is held by an exclusive `flock` on `/run/testenv-node/slot-<n>.lock`
//! for the environment's lifetime, so environments side by side (test binaries in parallel, the
//! demo) never share a name or an address, and a slot whose holder died is reused after cleaning
//! what it left behind (see [`super::NodeHost::prepare`]). For slot `n`:
//!
//! | what | value |
//! |---|---|
//! | network namespace | `testenv-<n>` (`/run/netns/testenv-<n>`) |
//! | host end of the veth pair | `tvh<n>`, address `10.201.<n>.1/24`: the apiserver and the collector listen here |
//! | node end, inside the namespace | `eth0`, address `10.201.<n>.2/24` (the node IP), default route via the host end |
//! | pod range (CNI bridge `cni0`, host-local IPAM) | `10.202.<n>.0/24` |
//!
//! containerd, the kubelet, kube-proxy and CoreDNS run inside the namespace (`nsenter --net`, the
//! host's mount namespace, so the kubelet's volume mounts are visible to runc). Pod traffic
//! leaving the pod range is masqueraded to the node IP by the bridge plugin, so the host needs
//! no route and no forwarding. Deleting the namespace deletes the veth pair, the bridge and
//! every iptables rule kube-proxy and the CNI plugins wrote.
//!
//! It must not start any process other than `ip`.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::NodeError;

/// How many environments with a real node can run side by side on one machine.
pub const SLOTS: u8 = 64;
/// Where the slot locks live (tmpfs: gone after a reboot, as the namespaces are).
pub const LOCK_DIR: &str = "/run/testenv-node";
/// Where each slot's containerd and kubelet keep their state and sockets
/// (`<RUNTIME_DIR>/slot-<n>`). Not under the environment's directory: a unix socket's path may
/// have at most 107 bytes (containerd refuses more than 104), and the environment's directory
/// sits below the cargo target directory, which can be deep (CI's is in `~/.cache/...`).
pub const RUNTIME_DIR: &str = "/var/lib/testenv-node";

/// The runtime directory of slot `n` (see [`RUNTIME_DIR`]).
pub fn runtime_dir(n: u8) -> PathBuf {
    Path::new(RUNTIME_DIR).join(format!("slot-{n}"))
}

/// A held slot: its lock file stays open (and locked) as long as this value lives.
#[derive(Debug)]
pub struct Slot {
    n: u8,
    _lock: File,
}

impl Slot {
    /// Takes the first free slot and records `env_dir` in its lock file (so the next holder
    /// can clean up after a holder that died). Returns the slot and the environment directory
    /// its previous holder recorded, if any.
    pub fn acquire(env_dir: &Path) -> Result<(Self, Option<PathBuf>), NodeError> {
        let dir = Path::new(LOCK_DIR);
        std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
            path: dir.to_owned(),
            source,
        })?;
        for n in 0..SLOTS {
            let path = dir.join(format!("slot-{n}.lock"));
            let io = |source| NodeError::Io {
                path: path.clone(),
                source,
            };
            let mut file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match rustix::fs::flock(
                file.as_fd(),
                rustix::fs::FlockOperation::NonBlockingLockExclusive,
            ) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => return Err(io(e.into())),
            }
            let previous = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from);
            file.set_len(0).map_err(io)?;
            file.write_all(env_dir.as_os_str().as_encoded_bytes())
                .map_err(io)?;
            return Ok((Self { n, _lock: file }, previous));
        }
        Err(NodeError::NoSlot {
            slots: SLOTS,
            dir: dir.to_owned(),
        })
    }

    /// The slot's number.
    pub fn number(&self) -> u8 {
        self.n
    }
}

/// The addresses and names of slot `n` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// The network namespace's name.
    pub netns: String,
    /// The host end of the veth pair.
    pub host_if: String,
    /// The host end's address: the apiserver and the collector listen here.
    pub host_ip: Ipv4Addr,
    /// The node IP (inside the namespace).
    pub node_ip: Ipv4Addr,
    /// The pod range, CIDR notation.
    pub pod_cidr: String,
}

impl Addresses {
    /// The names and addresses of slot `n`.
    pub fn of_slot(n: u8) -> Self {
        Self {
            netns: format!("testenv-{n}"),
            host_if: format!("tvh{n}"),
            host_ip: Ipv4Addr::new(10, 201, n, 1),
            node_ip: Ipv4Addr::new(10, 201, n, 2),
            pod_cidr: format!("10.202.{n}.0/24"),
        }
    }

    /// `/run/netns/<netns>`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// `--net=/run/netns/<netns>`, nsenter's argument.
    pub fn nsenter_net_arg(&self) -> OsString {
        let mut arg = OsString::from("--net=");
        arg.push(self.netns_path());
        arg
    }
}

/// Creates the namespace and the veth pair of `addresses` (removing leftovers of the same names
/// first), with forwarding and `br_netfilter` on inside the namespace.
pub fn create(addresses: &Addresses) -> Result<(), NodeError> {
    delete(addresses);
    let a = addresses;
    let node_if = format!("tvn{}", a.host_if.trim_start_matches("tvh"));
    let host_cidr = format!("{}/24", a.host_ip);
    let node_cidr = format!("{}/24", a.node_ip);
    let host_ip = a.host_ip.to_string();
    ip(&["netns", "add", &a.netns])?;
    ip(&[
        "link", "add", &a.host_if, "type", "veth", "peer", "name", &node_if, "netns", &a.netns,
    ])?;
    ip(&["addr", "add", &host_cidr, "dev", &a.host_if])?;
    ip(&["link", "set", &a.host_if, "up"])?;
    ip(&["-n", &a.netns, "link", "set", &node_if, "name", "eth0"])?;
    ip(&["-n", &a.netns, "addr", "add", &node_cidr, "dev", "eth0"])?;
    ip(&["-n", &a.netns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &a.netns, "link", "set", "lo", "up"])?;
    ip(&["-n", &a.netns, "route", "add", "default", "via", &host_ip])?;
    // /proc/sys/net belongs to the namespace of the process that opens it: write these from
    // inside (the kubelet and kube-proxy check them; the bridge plugin needs forwarding).
    for (key, value) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/bridge/bridge-nf-call-ip6tables", "1"),
    ] {
        run(
            "nsenter",
            &[
                &a.nsenter_net_arg(),
                &OsString::from("sh"),
                &OsString::from("-c"),
                &OsString::from(format!("echo {value} > /proc/sys/{key}")),
            ],
        )?;
    }
    Ok(())
}

/// Deletes the namespace and the host end of the veth pair (best effort: either may be gone).
pub fn delete(addresses: &Addresses) {
    let _ = ip(&["netns", "delete", &addresses.netns]);
    let _ = ip(&["link", "delete", &addresses.host_if]);
}

fn ip(args: &[&str]) -> Result<(), NodeError> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let refs: Vec<&OsString> = args.iter().collect();
    run("ip", &refs)
}

/// Runs `program args` to completion; a non-zero exit is an error quoting its stderr.
pub(super) fn run(program: &str, args: &[&OsString]) -> Result<(), NodeError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NodeError::Io {
            path: PathBuf::from(program),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NodeError::Command {
            command: format!(
                "{program} {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_have_distinct_names_and_addresses() {
        let a = Addresses::of_slot(0);
        let b = Addresses::of_slot(7);
        assert_eq!(a.host_ip, Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(b.node_ip, Ipv4Addr::new(10, 201, 7, 2));
        assert_eq!(b.pod_cidr, "10.202.7.0/24");
        assert_ne!(a.netns, b.netns);
        assert_ne!(a.host_if, b.host_if);
        assert_eq!(
            b.nsenter_net_arg(),
            OsString::from("--net=/run/netns/testenv-7")
        );
    }
}
