//! IPv4 options (RFC 791 §3.1): the structural check a router makes before
//! it forwards or answers a packet that carries options (RFC 1812 §4.2.2.1,
//! §5.2.4: a malformed option is answered with a Parameter Problem whose
//! pointer names the octet in error, and the packet is never forwarded as is).
//!
//! ```text
//!  single-octet options:  0 End of Option List    1 No Operation
//!  every other option:    +--------+--------+---------...
//!                         |  type  | length | data (length - 2 octets)
//!                         +--------+--------+---------...
//!  type: copied flag (1 bit), class (2 bits), number (5 bits)
//!
//!  Record Route (7), Loose (131) / Strict (137) Source Route:
//!  +--------+--------+--------+--------- route data: 4-octet addresses
//!  |  type  | length |pointer |          length = 3 + 4 n, pointer ≥ 4,
//!  +--------+--------+--------+---------  pointer ≤ length + 1, pointer ≡ 0 (mod 4)
//!
//!  Internet Timestamp (68):
//!  +--------+--------+--------+--------+
//!  |  68    | length |pointer |oflw|flg|  length ≥ 4, pointer ≥ 5,
//!  +--------+--------+--------+--------+  flag 0 (times), 1 (address+time) or 3 (prespecified)
//! ```
//!
//! [`check`] walks the option bytes (the IPv4 header after its 20 fixed
//! octets) and returns what it found, or the offset of the first octet in
//! error. It checks every option's length against the header, and the
//! fields above for the options it knows (Record Route, Timestamp, the two
//! source routes, Stream ID 136 and Router Alert 148, both length 4); other
//! option numbers are skipped by their length (RFC 1812 §4.2.2.1: unknown
//! options are ignored). Nothing is allocated; it never panics.

/// End of Option List.
pub const END: u8 = 0;
/// No Operation.
pub const NOP: u8 = 1;
/// Record Route.
pub const RECORD_ROUTE: u8 = 7;
/// Internet Timestamp.
pub const TIMESTAMP: u8 = 68;
/// Loose Source and Record Route.
pub const LSRR: u8 = 131;
/// Stream Identifier (obsolete, RFC 6814; length 4).
pub const STREAM_ID: u8 = 136;
/// Strict Source and Record Route.
pub const SSRR: u8 = 137;
/// Router Alert (RFC 2113; length 4).
pub const ROUTER_ALERT: u8 = 148;

/// What [`check`] found in well-formed options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// A Loose or Strict Source Route option is present.
    pub source_route: bool,
    /// A Record Route option is present.
    pub record_route: bool,
    /// A Timestamp option is present.
    pub timestamp: bool,
    /// A Router Alert option is present.
    pub router_alert: bool,
    /// Options seen (NOP and End not counted).
    pub count: usize,
}

/// A malformed option: `offset` is the octet in error, counted from the
/// start of the options (add 20 for an ICMP Parameter Problem pointer into
/// the IPv4 header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionError {
    pub offset: usize,
}

/// Checks the option bytes of an IPv4 header (`header[20..header_len]`).
pub fn check(options: &[u8]) -> Result<Summary, OptionError> {
    let mut s = Summary::default();
    let mut at = 0;
    while at < options.len() {
        let kind = options[at];
        match kind {
            END => break,
            NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        // Every other option has a length octet, covering type and length.
        let Some(&len) = options.get(at + 1) else {
            return Err(OptionError { offset: at });
        };
        let len = usize::from(len);
        if len < 2 || at + len > options.len() {
            return Err(OptionError { offset: at + 1 });
        }
        check_known(kind, &options[at..at + len]).map_err(|rel| OptionError { offset: at + rel })?;
        match kind {
            LSRR | SSRR => s.source_route = true,
            RECORD_ROUTE => s.record_route = true,
            TIMESTAMP => s.timestamp = true,
            ROUTER_ALERT => s.router_alert = true,
            _ => {}
        }
        s.count += 1;
        at += len;
    }
    Ok(s)
}

/// The fields of an option this module knows; `Err(offset)` within `opt`.
fn check_known(kind: u8, opt: &[u8]) -> Result<(), usize> {
    let len = opt.len();
    match kind {
        RECORD_ROUTE | LSRR | SSRR => {
            if len < 3 || !(len - 3).is_multiple_of(4) {
                return Err(1);
            }
            let pointer = usize::from(opt[2]);
            if pointer < 4 || pointer > len + 1 || pointer % 4 != 0 {
                return Err(2);
            }
        }
        TIMESTAMP => {
            if len < 4 {
                return Err(1);
            }
            let pointer = usize::from(opt[2]);
            let flag = opt[3] & 0x0f;
            if pointer < 5 || pointer > len + 1 {
                return Err(2);
            }
            if !matches!(flag, 0 | 1 | 3) {
                return Err(3);
            }
            // Entries are 4 octets (flag 0) or 8 (address + time).
            let entry = if flag == 0 { 4 } else { 8 };
            if !(len - 4).is_multiple_of(entry) || (pointer - 5) % entry != 0 {
                return Err(1);
            }
        }
        STREAM_ID | ROUTER_ALERT if len != 4 => return Err(1),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn well_formed_options() {
        assert_eq!(check(&[]), Ok(Summary::default()));
        assert_eq!(check(&[NOP, NOP, NOP, END]).unwrap().count, 0);
        // Record Route with room for one address, pointer at it; then End.
        let s = check(&[RECORD_ROUTE, 7, 4, 0, 0, 0, 0, END]).unwrap();
        assert!(s.record_route && s.count == 1);
        // Full Record Route: pointer one past the end.
        assert!(check(&[RECORD_ROUTE, 7, 8, 1, 2, 3, 4, END]).is_ok());
        let s = check(&[LSRR, 11, 4, 192, 0, 2, 9, 198, 51, 100, 9, NOP]).unwrap();
        assert!(s.source_route);
        let s = check(&[ROUTER_ALERT, 4, 0, 0]).unwrap();
        assert!(s.router_alert);
        // Timestamp, flag 1 (address + time), one entry.
        assert!(check(&[TIMESTAMP, 12, 5, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap().timestamp);
        // An unknown option is skipped by its length; after End anything goes.
        assert_eq!(check(&[30, 3, 0xaa, NOP, END, 0xff, 0xff]).unwrap().count, 1);
    }

    #[test]
    fn malformed_options_name_the_octet() {
        let err = |o: &[u8]| check(o).unwrap_err().offset;
        assert_eq!(err(&[NOP, 30]), 1, "no length octet");
        assert_eq!(err(&[30, 0]), 1, "length 0");
        assert_eq!(err(&[30, 1, 0]), 1, "length 1");
        assert_eq!(err(&[NOP, 30, 9, 0, 0]), 2, "longer than the header");
        assert_eq!(err(&[RECORD_ROUTE, 6, 4, 0, 0, 0]), 1, "not 3 + 4n");
        assert_eq!(err(&[RECORD_ROUTE, 7, 3, 0, 0, 0, 0]), 2, "pointer below 4");
        assert_eq!(err(&[RECORD_ROUTE, 7, 9, 0, 0, 0, 0]), 2, "pointer past length + 1");
        assert_eq!(err(&[SSRR, 7, 5, 0, 0, 0, 0]), 2, "pointer not on an address");
        assert_eq!(err(&[TIMESTAMP, 8, 5, 0x02, 0, 0, 0, 0]), 3, "flag 2");
        assert_eq!(err(&[TIMESTAMP, 8, 4, 0x00, 0, 0, 0, 0]), 2, "pointer below 5");
        assert_eq!(err(&[TIMESTAMP, 10, 5, 0x01, 0, 0, 0, 0, 0, 0]), 1, "not 4 + 8n");
        assert_eq!(err(&[ROUTER_ALERT, 6, 0, 0, 0, 0]), 1, "router alert is 4 octets");
        assert_eq!(err(&[NOP, NOP, STREAM_ID, 3, 0]), 3);
    }

    proptest! {
        #[test]
        fn never_panics_and_errors_point_inside(options in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Err(e) = check(&options) {
                prop_assert!(e.offset < options.len());
            }
        }
    }
}
