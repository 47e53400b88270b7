//! The SSRF guard. A pinned host name is only as good as what it resolves
//! to: a DNS answer of 127.0.0.1 or 169.254.169.254 (cloud metadata) would
//! send the credential, or the caller's request, somewhere local. The
//! broker resolves the pinned host itself, judges every address here, and
//! connects to the address it judged (never resolving again), so a second
//! answer cannot slip in between check and connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether loopback upstreams are allowed: only in a test configuration,
/// which only root's configuration file can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Production,
    LoopbackForTests,
}

/// Why an address may not be connected to, or `None` when it may.
pub fn forbidden(ip: IpAddr, mode: Mode) -> Option<&'static str> {
    let why = match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }?;
    if mode == Mode::LoopbackForTests && why == LOOPBACK {
        return None;
    }
    Some(why)
}

const LOOPBACK: &str = "loopback";

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "the unspecified or \"this network\" range 0.0.0.0/8",
        (127, _, _) => LOOPBACK,
        (10, _, _) => "a private address (10.0.0.0/8)",
        (172, 16..=31, _) => "a private address (172.16.0.0/12)",
        (192, 168, _) => "a private address (192.168.0.0/16)",
        (169, 254, _) => "a link-local address (169.254.0.0/16, cloud metadata lives here)",
        (100, 64..=127, _) => "a carrier-grade NAT address (100.64.0.0/10)",
        (192, 0, 0) => "an IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (192, 88, 99) => "a 6to4 relay anycast address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("the unspecified address ::");
    }
    if ip.is_loopback() {
        return Some(LOOPBACK);
    }
    // IPv4 inside IPv6 is judged as the IPv4 address it carries: mapped
    // (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and
    // 6to4 (2002:AABB:CCDD::/48). A carried address that is public is
    // still refused for the compatible form, which nothing routes today.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    if s[..6] == [0; 6] {
        return Some("an IPv4-compatible IPv6 address (::/96, deprecated)");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_reason(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return v4_reason(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "a unique-local address (fc00::/7)",
        0xfe80..=0xfebf => "a link-local address (fe80::/10)",
        0xfec0..=0xfeff => "a site-local address (fec0::/10, deprecated)",
        0xff00..=0xffff => "a multicast address (ff00::/8)",
        0x2001 if s[1] == 0x0db8 => "a documentation address (2001:db8::/32)",
        0x2001 if s[1] == 0 => "a Teredo address (2001::/32), which tunnels to any IPv4 address",
        0x0100 if s[1..4] == [0, 0, 0] => "a discard-only address (100::/64)",
        _ => return None,
    })
}

fn embedded(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// The first address of a resolution that may be connected to, or the
/// reason of the first refused one when none may. An empty answer is
/// refused too.
pub fn pick(addrs: &[IpAddr], mode: Mode) -> Result<IpAddr, &'static str> {
    let mut first_refusal = "the host resolved to no address";
    for &ip in addrs {
        match forbidden(ip, mode) {
            None => return Ok(ip),
            Some(why) if first_refusal.starts_with("the host resolved") => first_refusal = why,
            Some(_) => {}
        }
    }
    Err(first_refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(s: &str) -> Option<&'static str> {
        forbidden(s.parse().unwrap(), Mode::Production)
    }

    #[test]
    fn local_and_internal_addresses_are_refused() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(no(a).is_some(), "{a} was let through");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "104.18.6.192",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700::6810:84e5",
            "2a00:1450:4001:82b::200e",
        ] {
            assert_eq!(no(a), None, "{a} was refused");
        }
    }

    #[test]
    fn loopback_only_in_test_mode_and_nothing_else() {
        let t = |s: &str| forbidden(s.parse().unwrap(), Mode::LoopbackForTests);
        assert_eq!(t("127.0.0.1"), None);
        assert_eq!(t("::1"), None);
        assert_eq!(t("::ffff:127.0.0.1"), None);
        assert!(t("10.0.0.1").is_some());
        assert!(t("169.254.169.254").is_some());
        assert!(t("100.64.0.1").is_some());
    }

    #[test]
    fn a_resolution_gives_its_first_allowed_address() {
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            pick(&[a("127.0.0.1"), a("1.1.1.1")], Mode::Production),
            Ok(a("1.1.1.1"))
        );
        assert_eq!(pick(&[a("127.0.0.1")], Mode::Production), Err(LOOPBACK));
        assert!(pick(&[], Mode::Production)
            .unwrap_err()
            .contains("no address"));
        assert!(pick(&[a("10.0.0.1"), a("::1")], Mode::Production)
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }
}
