//! The machine's network interfaces that can carry multicast.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::net::Ipv4Addr;

/// One interface, as discovery needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interface {
    /// Its name (`eth0`, `wlp2s0`).
    pub name: String,
    /// Its index (the scope id of its IPv6 link-local addresses).
    pub index: u32,
    /// Its IPv4 addresses (multicast is sent from the first).
    pub ipv4: Vec<Ipv4Addr>,
    /// Whether it has an IPv6 address.
    pub ipv6: bool,
    /// Whether it is a loopback interface.
    pub loopback: bool,
}

/// Every interface that is up and has the MULTICAST flag, by name.
pub fn multicast_interfaces() -> std::io::Result<Vec<Interface>> {
    let mut found: BTreeMap<String, Interface> = BTreeMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        let flags = ifa.ifa_flags;
        let wanted = libc::IFF_UP as u32 | libc::IFF_MULTICAST as u32;
        if flags & wanted != wanted || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let entry = found.entry(name.clone()).or_insert_with(|| Interface {
            // SAFETY: a valid NUL-terminated name.
            index: unsafe { libc::if_nametoindex(ifa.ifa_name) },
            name,
            ipv4: Vec::new(),
            ipv6: false,
            loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
        });
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family says its type.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                entry
                    .ipv4
                    .push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            libc::AF_INET6 => entry.ipv6 = true,
            _ => {}
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found.into_values().filter(|i| i.index != 0).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_interfaces_without_failing() {
        // Which interfaces a machine has is its own business; the call must work
        // and name each with an index.
        for i in super::multicast_interfaces().unwrap() {
            assert!(!i.name.is_empty() && i.index > 0, "{i:?}");
        }
    }
}
