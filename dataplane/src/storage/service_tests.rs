//! The service over a RAM device, with frames as a kernel client sends them.

use std::net::Ipv6Addr;

use objstore::blk::RamDevice;
use objstore::{FormatOptions, Store, StoreConfig};

use super::*;
use netwire::checksum;
use netwire::VecBuf;

const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const PREFIX: u128 = 0x2001_0db8_00f0_0001_0000_0000_0000_0000;
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];

fn service() -> ObjectService<VecBuf> {
    let dev = RamDevice::new(4096, 7);
    Store::format(&dev, FormatOptions { max_objects: 256, journal_blocks: 0 }).unwrap();
    let store = Store::open(&dev, StoreConfig::default()).unwrap();
    // The device must outlive the store: leak it for the test's lifetime.
    std::mem::forget(dev);
    ObjectService::new(store, 7878, 64, 8)
}

fn replica(object: u64) -> Ipv6Addr {
    Ipv6Addr::from(PREFIX | u128::from(object))
}

/// A request frame as a kernel socket sends it.
fn frame(object: u64, op: Op, offset: u64, length: u32, flags: u16, data: &[u8]) -> VecBuf {
    let mut payload = vec![0u8; sh::HEADER_LEN];
    sh::Repr { op: op.0, status: 0, flags, request_id: 99, object_id: object, offset, length }
        .emit(&mut payload)
        .unwrap();
    payload.extend_from_slice(data);
    let udp_len = UDP + payload.len();
    let mut f = vec![0u8; ETH + IP6 + udp_len];
    f[0..6].copy_from_slice(&OUR_MAC);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    ipv6::emit_header(&mut f[ETH..], CLIENT, replica(object), Protocol::UDP, 64, udp_len).unwrap();
    let udp = &mut f[ETH + IP6..];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&7878u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[8..].copy_from_slice(&payload);
    let sum =
        checksum::add(checksum::pseudo_header_v6(CLIENT, replica(object), 17, udp_len as u32), checksum::sum(udp));
    udp[6..8].copy_from_slice(&(!sum).to_be_bytes());
    VecBuf::from_frame(&f, 0)
}

/// Runs the service until `n` replies came (immediate or polled).
fn exchange(svc: &mut ObjectService<VecBuf>, reqs: Vec<VecBuf>, n: usize) -> Vec<Vec<u8>> {
    let mut replies: Vec<VecBuf> = reqs.into_iter().filter_map(|r| svc.request(r)).collect();
    for _ in 0..100_000 {
        if replies.len() >= n {
            break;
        }
        svc.poll(&mut replies);
    }
    assert_eq!(replies.len(), n, "replies");
    replies.into_iter().map(|r| r.to_vec()).collect()
}

/// (status, reply data) of a reply frame, checking it goes back to the client.
fn read_reply(f: &[u8], object: u64) -> (u16, Vec<u8>) {
    assert_eq!(&f[0..6], &CLIENT_MAC);
    let ip = ipv6::Packet::new_checked(&f[ETH..]).unwrap();
    assert_eq!(ip.dst_addr(), CLIENT);
    assert_eq!(ip.src_addr(), replica(object));
    let udp_len = usize::from(ip.payload_len());
    let udp = &f[ETH + IP6..ETH + IP6 + udp_len];
    let sum =
        checksum::add(checksum::pseudo_header_v6(replica(object), CLIENT, 17, udp_len as u32), checksum::sum(udp));
    assert_eq!(sum, 0xffff, "UDP checksum of the reply");
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 7878);
    let p = sh::Packet::new_checked(&udp[8..]).unwrap();
    assert!(p.op().is_reply());
    assert_eq!(p.request_id(), 99);
    (p.status(), p.data().to_vec())
}

fn put(svc: &mut ObjectService<VecBuf>, object: u64, version: u64, content: &[u8]) -> Vec<u16> {
    let size = content.len() as u64;
    let mut reqs = Vec::new();
    let frags = content.len().div_ceil(FRAGMENT).max(1);
    for i in 0..frags {
        let part = &content[(i * FRAGMENT).min(content.len())..((i + 1) * FRAGMENT).min(content.len())];
        let mut data = size.to_be_bytes().to_vec();
        data.extend_from_slice(&version.to_be_bytes());
        data.extend_from_slice(part);
        reqs.push(frame(object, Op::PUT_CHUNK, (i * FRAGMENT) as u64, part.len() as u32, 0, &data));
    }
    exchange(svc, reqs, frags).iter().map(|f| read_reply(f, object).0).collect()
}

fn get(svc: &mut ObjectService<VecBuf>, object: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < size {
        let r = exchange(svc, vec![frame(object, Op::GET_CHUNK, off as u64, FRAGMENT as u32, 0, &[])], 1);
        let (st, data) = read_reply(&r[0], object);
        assert_eq!(st, sh::status::OK);
        assert_eq!(u64::from_be_bytes(data[0..8].try_into().unwrap()), size as u64);
        out.extend_from_slice(&data[16..]);
        off += FRAGMENT;
    }
    out
}

#[test]
fn put_get_stat_list_delete() {
    let mut svc = service();
    for (object, size) in [(1u64, 0usize), (2, 1), (3, 4096), (4, 10_000)] {
        let content: Vec<u8> = (0..size).map(|i| (i * 7 + object as usize) as u8).collect();
        let st = put(&mut svc, object, 1, &content);
        assert!(st.iter().all(|&s| s == sh::status::OK), "put {object}: {st:?}");
        assert_eq!(get(&mut svc, object, size), content, "object {object}");
        let r = exchange(&mut svc, vec![frame(object, Op::STAT, 0, 0, 0, &[])], 1);
        let (st, d) = read_reply(&r[0], object);
        assert_eq!(st, sh::status::OK);
        assert_eq!(u64::from_be_bytes(d[0..8].try_into().unwrap()), size as u64);
        assert_eq!(u32::from_be_bytes(d[20..24].try_into().unwrap()), 1, "complete");
    }
    // Every fragment is acknowledged only when durable: the store wrote the chunks.
    assert_eq!(svc.counters.chunks_written.get(), 1 + 1 + 1 + 3);
    // A retried fragment of a stored chunk is acknowledged at once.
    let mut data = 4096u64.to_be_bytes().to_vec();
    data.extend_from_slice(&1u64.to_be_bytes());
    data.extend(vec![0u8; FRAGMENT]);
    let again = svc.request(frame(3, Op::PUT_CHUNK, 0, FRAGMENT as u32, 0, &data)).expect("answered at once");
    assert_eq!(read_reply(&again.to_vec(), 3).0, sh::status::OK);
    // List from the start.
    let r = exchange(&mut svc, vec![frame(0, Op::LIST, 0, 10, 0, &[])], 1);
    let (st, d) = read_reply(&r[0], 0);
    assert_eq!(st, sh::status::OK);
    assert_eq!(u32::from_be_bytes(d[0..4].try_into().unwrap()), 4);
    // Delete, then not found.
    let r = exchange(&mut svc, vec![frame(4, Op::DELETE, 0, 0, 0, &0u64.to_be_bytes())], 1);
    assert_eq!(read_reply(&r[0], 4).0, sh::status::OK);
    let r = exchange(&mut svc, vec![frame(4, Op::STAT, 0, 0, 0, &[])], 1);
    assert_eq!(read_reply(&r[0], 4).0, sh::status::NOT_FOUND);
    assert_eq!(svc.queue_depth(), 0);
    // Latency was recorded for every answered operation.
    let count = |op: usize| svc.counters.latency[op].count.get();
    assert!(count(0) >= 1 + 1 + 1 + 3, "put fragments: {}", count(0));
    assert!(count(1) >= 1 + 1 + 3, "get fragments");
    assert!(count(2) >= 4, "stats");
    assert_eq!(count(3), 1);
    assert_eq!(count(4), 1);
    let h = &svc.counters.latency[1];
    assert_eq!(h.buckets.iter().map(|b| b.get()).sum::<u64>(), h.count.get());
    assert!(svc.counters.device_used_blocks.get() > 0);
    // Requests and replies by op and status: every request of this test was answered.
    let c = &svc.counters;
    let ok = |op: Op| c.replies[op_slot(op)][status_slot(sh::status::OK)].get();
    for op in [Op::PUT_CHUNK, Op::GET_CHUNK, Op::STAT, Op::LIST, Op::DELETE] {
        let replies: u64 = c.replies[op_slot(op)].iter().map(Counter::get).sum();
        assert_eq!(c.requests[op_slot(op)].get(), replies, "{} requests = replies", op.name());
    }
    assert_eq!(ok(Op::DELETE), 1);
    assert_eq!(c.replies[op_slot(Op::STAT)][status_slot(sh::status::NOT_FOUND)].get(), 1);
    assert_eq!(ok(Op::STAT), 4);
    assert_eq!(ok(Op::LIST), 1);
    let put_fragments_and_the_retry = 1 + 1 + 1 + 3 + 1;
    assert!(ok(Op::PUT_CHUNK) >= put_fragments_and_the_retry);
}

#[test]
fn op_and_status_slots_match_the_wire_names() {
    for code in 0..=u8::MAX {
        let op = Op(code);
        assert_eq!(OPS[op_slot(op)], op.name(), "op {code:#x}");
    }
    for code in 0..=u16::MAX {
        let slot = status_slot(code);
        assert!(slot < STATUS_SLOTS);
        let label = if slot < sh::status::ALL.len() { sh::status::name(sh::status::ALL[slot]) } else { "unknown" };
        assert_eq!(label, sh::status::name(code), "status {code}");
    }
}

#[test]
fn bad_requests_are_refused_or_dropped() {
    let mut svc = service();
    // Object id in the header not the address's: refused.
    let mut f = frame(5, Op::STAT, 0, 0, 0, &[]);
    {
        let d = f.data_mut();
        d[SH + 16..SH + 24].copy_from_slice(&6u64.to_be_bytes());
    }
    // (the checksum is now wrong: dropped, counted)
    assert!(svc.request(f).is_none());
    assert_eq!(svc.counters.bad_requests.get(), 1);
    // A fragment not on a 1 KiB boundary: bad request.
    let mut data = 4096u64.to_be_bytes().to_vec();
    data.extend_from_slice(&1u64.to_be_bytes());
    data.extend(vec![0u8; 100]);
    let r = svc.request(frame(5, Op::PUT_CHUNK, 100, 100, 0, &data)).expect("answered");
    assert_eq!(read_reply(&r.to_vec(), 5).0, sh::status::BAD_REQUEST);
    // Unknown op.
    let r = svc.request(frame(5, Op(0x33), 0, 0, 0, &[])).expect("answered");
    assert_eq!(read_reply(&r.to_vec(), 5).0, sh::status::UNSUPPORTED);
    let c = &svc.counters;
    assert_eq!(c.requests[OTHER_OP].get(), 2, "the unparsable frame and the unknown op");
    assert_eq!(c.replies[OTHER_OP][status_slot(sh::status::UNSUPPORTED)].get(), 1);
    assert_eq!(c.replies[op_slot(Op::PUT_CHUNK)][status_slot(sh::status::BAD_REQUEST)].get(), 1);
    // Get of a missing object.
    let r = exchange(&mut svc, vec![frame(5, Op::GET_CHUNK, 0, 1024, 0, &[])], 1);
    assert_eq!(read_reply(&r[0], 5).0, sh::status::NOT_FOUND);
}

#[test]
fn a_partial_chunk_is_not_acknowledged() {
    let mut svc = service();
    let content = vec![9u8; 4096];
    let mut data = 4096u64.to_be_bytes().to_vec();
    data.extend_from_slice(&1u64.to_be_bytes());
    data.extend_from_slice(&content[..FRAGMENT]);
    // Only the first of four fragments: held, nothing written, no reply.
    assert!(svc.request(frame(8, Op::PUT_CHUNK, 0, FRAGMENT as u32, 0, &data)).is_none());
    let mut out = Vec::new();
    for _ in 0..1000 {
        svc.poll(&mut out);
    }
    assert!(out.is_empty());
    assert_eq!(svc.counters.chunks_written.get(), 0);
    assert_eq!(svc.queue_depth(), 1);
}

/// A client retransmits fragments while the chunk is still assembling: each copy is freed
/// (counted), never answered busy, and the held copies get their replies once the chunk is
/// durable.
#[test]
fn retransmitted_fragments_are_freed_not_answered_busy() {
    let mut svc = service();
    let content = vec![5u8; 4096];
    let frag = |i: usize| {
        let mut data = 4096u64.to_be_bytes().to_vec();
        data.extend_from_slice(&1u64.to_be_bytes());
        data.extend_from_slice(&content[i * FRAGMENT..(i + 1) * FRAGMENT]);
        frame(9, Op::PUT_CHUNK, (i * FRAGMENT) as u64, FRAGMENT as u32, 0, &data)
    };
    // Three of four fragments, each sent four times (more copies than the assembly holds).
    for _ in 0..4 {
        for i in 0..3 {
            assert!(svc.request(frag(i)).is_none(), "fragment {i}: held or freed, not answered");
        }
    }
    assert_eq!(svc.counters.fragments_duplicate.get(), 9);
    assert_eq!(svc.counters.busy.get(), 0);
    let replies = exchange(&mut svc, vec![frag(3)], 4);
    assert!(replies.iter().all(|r| read_reply(r, 9).0 == sh::status::OK));
    assert_eq!(get(&mut svc, 9, 4096), content);
}
