//! The object store end to end, on the RAM device and on io_uring over a real file.

mod common;

use common::{dev_file, pattern};
use objstore::blk::{BlockDevice, RamDevice, UringDevice, UringOptions};
use objstore::store::FormatOptions;
use objstore::{BlockingStore, Error, StoreConfig};

const SIZES: [usize; 6] = [0, 1, 4096, 4097, 3 * 4096 - 1, 1 << 20];

fn small_cfg() -> StoreConfig {
    StoreConfig { max_requests: 32, checkpoint_depth: 4 }
}

fn format(dev: &dyn BlockDevice, max_objects: u64, journal_blocks: u64) {
    objstore::Store::format(dev, FormatOptions { max_objects, journal_blocks }).expect("format");
}

fn round_trips(dev: &dyn BlockDevice) {
    format(dev, 100, 0);
    let mut s = BlockingStore::open(dev, small_cfg()).unwrap();
    for (i, &n) in SIZES.iter().enumerate() {
        let data = pattern(i as u64, n);
        s.put_object(i as u128 + 1, 1, &data).unwrap();
        let st = s.stat(i as u128 + 1).unwrap();
        assert_eq!((st.size, st.version), (n as u64, 1));
        assert_eq!(st.present, st.chunks);
        assert_eq!(s.get_object(i as u128 + 1).unwrap(), data, "size {n}");
    }
    // Written in order on an empty device, the 1 MiB object is one extent (next-fit allocator).
    let big = s.store().index().get(SIZES.len() as u128).unwrap().extents();
    assert_eq!(big.len(), 1, "{big:?}");
    assert_eq!(big[0].blocks, 256);
    s.quiesce();
    drop(s);
    // And after a clean remount.
    let mut s = BlockingStore::open(dev, small_cfg()).unwrap();
    for (i, &n) in SIZES.iter().enumerate() {
        assert_eq!(s.get_object(i as u128 + 1).unwrap(), pattern(i as u64, n), "size {n} after remount");
    }
    assert_eq!(s.list(None, 100).unwrap().len(), SIZES.len());
}

#[test]
fn round_trips_on_ram() {
    round_trips(&RamDevice::new(4096, 1));
}

#[test]
fn round_trips_on_uring_file() {
    let f = dev_file(16 << 20);
    let dev = UringDevice::open(&f.path, UringOptions::default()).unwrap();
    round_trips(&dev);
    // IOPOLL was probed and a decision recorded (on ext4/xfs files: not supported).
    assert!(dev.iopoll().is_some(), "{}", dev.describe());
}

#[test]
fn hundred_mib_object_on_uring_file() {
    let f = dev_file(120 << 20);
    let dev = UringDevice::open(&f.path, UringOptions::default()).unwrap();
    format(&dev, 16, 0);
    let mut s = BlockingStore::open(&dev, StoreConfig::default()).unwrap();
    let data = pattern(77, 100 << 20);
    s.put_object(1, 1, &data).unwrap();
    drop(s);
    let mut s = BlockingStore::open(&dev, StoreConfig::default()).unwrap();
    assert_eq!(s.stat(1).unwrap().present, 25_600);
    assert!(s.get_object(1).unwrap() == data, "100 MiB object differs after remount");
}

#[test]
fn versions_idempotence_delete_list() {
    let dev = RamDevice::new(2048, 2);
    format(&dev, 50, 0);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    let a = pattern(1, 4096);
    let b = pattern(2, 100);
    s.put_chunk(7, 0, &a, 4196, 1).unwrap();
    // Same chunk, same version, same content: fine, and the old block is reclaimed.
    let free = s.store().free_blocks();
    s.put_chunk(7, 0, &a, 4196, 1).unwrap();
    s.quiesce();
    assert_eq!(s.store().free_blocks(), free);
    assert_eq!(s.stat(7).unwrap().present, 1);
    assert_eq!(s.get_chunk(7, 1), Err(Error::ChunkMissing { object: 7, chunk: 1 }));
    s.put_chunk(7, 1, &b, 4196, 1).unwrap();
    assert_eq!(s.get_chunk(7, 1).unwrap(), b);
    // Wrong length, out of range, size conflict, stale version: refused at submit.
    assert!(matches!(s.put_chunk(7, 1, &a, 4196, 1), Err(Error::BadLength { .. })));
    assert!(matches!(s.put_chunk(7, 2, &b, 4196, 1), Err(Error::ChunkOutOfRange { .. })));
    assert!(matches!(s.put_chunk(7, 0, &a, 8192, 1), Err(Error::SizeMismatch { .. })));
    // Newer version replaces the object.
    s.put_chunk(7, 0, &b, 100, 2).unwrap();
    assert_eq!(s.stat(7).unwrap().size, 100);
    assert_eq!(s.get_chunk(7, 0).unwrap(), b);
    assert!(matches!(s.put_chunk(7, 0, &a, 4196, 1), Err(Error::StaleVersion { current: 2, .. })));
    // Delete is idempotent.
    assert!(s.delete(7).unwrap());
    assert!(!s.delete(7).unwrap());
    assert_eq!(s.stat(7), Err(Error::NotFound(7)));
    assert_eq!(s.get_chunk(7, 0), Err(Error::NotFound(7)));
    // List pages through ids in order.
    for id in (10..30u128).rev() {
        s.put_object(id, 1, &pattern(id as u64, 10)).unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.list(after, 7).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|i| i.object);
        seen.extend(page.iter().map(|i| i.object));
    }
    assert_eq!(seen, (10..30).collect::<Vec<_>>());
}

fn chunk_lba(s: &BlockingStore, object: u128, chunk: usize) -> u64 {
    s.store().index().get(object).expect("object").chunks[chunk].lba
}

#[test]
fn flipped_bit_is_a_checksum_error_on_ram() {
    let dev = RamDevice::new(2048, 3);
    format(&dev, 10, 0);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    let data = pattern(9, 3 * 4096);
    s.put_object(5, 1, &data).unwrap();
    let lba = chunk_lba(&s, 5, 1);
    dev.flip_bit(lba, 1234, 3);
    assert_eq!(s.get_chunk(5, 1), Err(Error::Checksum { object: 5, chunk: 1 }));
    assert_eq!(s.get_object(5), Err(Error::Checksum { object: 5, chunk: 1 }));
    // The other chunks still read; rewriting the bad chunk repairs the object.
    assert_eq!(s.get_chunk(5, 0).unwrap(), data[..4096]);
    s.put_chunk(5, 1, &data[4096..8192], data.len() as u64, 1).unwrap();
    assert_eq!(s.get_object(5).unwrap(), data);
    // A flip in the zero padding past the end of a short chunk is caught too.
    s.put_object(6, 1, &[1, 2, 3]).unwrap();
    dev.flip_bit(chunk_lba(&s, 6, 0), 4000, 0);
    assert_eq!(s.get_chunk(6, 0), Err(Error::Checksum { object: 6, chunk: 0 }));
    assert_eq!(s.store().stats().checksum_failures, 3);
}

#[test]
fn flipped_bit_is_a_checksum_error_on_uring_file() {
    use std::os::unix::fs::FileExt;
    let f = dev_file(8 << 20);
    let dev = UringDevice::open(&f.path, UringOptions::default()).unwrap();
    format(&dev, 10, 0);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    let data = pattern(11, 8192);
    s.put_object(1, 1, &data).unwrap();
    let lba = chunk_lba(&s, 1, 0);
    // Corrupt the block through an ordinary (buffered) descriptor, then fsync; O_DIRECT reads
    // see the media.
    let raw = std::fs::OpenOptions::new().read(true).write(true).open(&f.path).unwrap();
    let mut byte = [0u8; 1];
    raw.read_exact_at(&mut byte, lba * 4096 + 77).unwrap();
    byte[0] ^= 0x10;
    raw.write_all_at(&byte, lba * 4096 + 77).unwrap();
    raw.sync_all().unwrap();
    assert_eq!(s.get_chunk(1, 0), Err(Error::Checksum { object: 1, chunk: 0 }));
    assert_eq!(s.get_chunk(1, 1).unwrap(), data[4096..]);
}

#[test]
fn journal_replay_after_crash() {
    let dev = RamDevice::new(2048, 4);
    format(&dev, 100, 256);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    for id in 0..20u128 {
        s.put_object(id, 1, &pattern(id as u64, 5000)).unwrap();
    }
    s.delete(3).unwrap();
    let seq = s.store().next_seq();
    assert!(seq > 1);
    // No checkpoint yet: everything lives in the journal.
    assert_eq!(s.store().superblock().ckpt_seq, 0);
    let (after, _) = dev.crash(42);
    drop(s);
    let mut s = BlockingStore::open(&after, small_cfg()).unwrap();
    assert_eq!(s.store().next_seq(), seq, "every acknowledged record replayed");
    for id in 0..20u128 {
        if id == 3 {
            assert_eq!(s.stat(3), Err(Error::NotFound(3)));
        } else {
            assert_eq!(s.get_object(id).unwrap(), pattern(id as u64, 5000));
        }
    }
}

#[test]
fn journal_wraps_through_checkpoints() {
    // A 16-record journal checkpoints every 8 records; write far more than that, crash, remount.
    let dev = RamDevice::new(4096, 5);
    format(&dev, 64, 16);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    for round in 0..6u64 {
        for id in 0..40u128 {
            s.put_object(id, round + 1, &pattern(round * 1000 + id as u64, 4096 + id as usize)).unwrap();
        }
    }
    let sb = *s.store().superblock();
    assert!(sb.generation > 3, "checkpoints happened: {sb:?}");
    let (after, _) = dev.crash(7);
    drop(s);
    let mut s = BlockingStore::open(&after, small_cfg()).unwrap();
    for id in 0..40u128 {
        assert_eq!(s.get_object(id).unwrap(), pattern(5000 + id as u64, 4096 + id as usize));
        assert_eq!(s.stat(id).unwrap().version, 6);
    }
    // Old versions' blocks were all reclaimed: only the live chunks are in use.
    let used: u64 = (0..40u64).map(|id| (4096 + id).div_ceil(4096)).sum();
    let total = s.store().superblock().geometry.data_blocks;
    assert_eq!(s.store().free_blocks(), total - used);
}

#[test]
fn full_device_is_a_clear_error_and_loses_nothing() {
    let dev = RamDevice::new(512, 6);
    format(&dev, 1000, 16);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    let mut stored = Vec::new();
    let err = loop {
        let id = stored.len() as u128;
        match s.put_object(id, 1, &pattern(id as u64, 3 * 4096)) {
            Ok(()) => stored.push(id),
            Err(e) => break e,
        }
    };
    assert_eq!(err, Error::NoSpace);
    assert!(!stored.is_empty());
    // Declared sizes reserve space: the failed object was refused before any data was written.
    assert_eq!(s.stat(stored.len() as u128), Err(Error::NotFound(stored.len() as u128)));
    for &id in &stored {
        assert_eq!(s.get_object(id).unwrap(), pattern(id as u64, 3 * 4096));
    }
    // Overwrites still work on a full device (spare blocks), and deleting makes room.
    s.put_chunk(0, 1, &pattern(99, 4096), 3 * 4096, 1).unwrap();
    s.delete(1).unwrap();
    let id = stored.len() as u128;
    s.put_object(id, 1, &pattern(id as u64, 3 * 4096)).unwrap();
    drop(s);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    assert_eq!(s.get_chunk(0, 1).unwrap(), pattern(99, 4096));
    assert_eq!(s.get_object(id).unwrap(), pattern(id as u64, 3 * 4096));
}

#[test]
fn object_table_full() {
    let dev = RamDevice::new(1024, 7);
    format(&dev, 3, 16);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    for id in 0..3u128 {
        s.put_object(id, 1, b"x").unwrap();
    }
    assert_eq!(s.put_object(3, 1, b"x"), Err(Error::ObjectTableFull(3)));
    s.delete(0).unwrap();
    s.put_object(3, 1, b"x").unwrap();
}

#[test]
fn store_and_queue_pairs_move_to_worker_threads() {
    fn is_send<T: Send>() {}
    is_send::<objstore::Store>();
    is_send::<BlockingStore>();
    let dev = RamDevice::new(256, 11);
    format(&dev, 8, 16);
    let store = objstore::Store::open(&dev, small_cfg()).unwrap();
    let worker = std::thread::spawn(move || {
        let mut s = BlockingStore::new(store);
        s.put_object(1, 1, b"moved").unwrap();
        s.get_object(1).unwrap()
    });
    assert_eq!(worker.join().unwrap(), b"moved");
}

#[test]
fn unformatted_device_is_refused() {
    let dev = RamDevice::new(256, 8);
    assert!(matches!(BlockingStore::open(&dev, small_cfg()), Err(Error::Corrupt(_))));
    // One bad superblock copy is survivable.
    format(&dev, 10, 16);
    dev.flip_bit(1, 5, 1);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    s.put_object(1, 1, b"ok").unwrap();
}

/// A get in flight pins the block it reads: deleting the object and churning the allocator
/// through the whole data area must not hand that block to a new write before the read runs.
#[test]
fn a_read_in_flight_keeps_its_block_from_reuse() {
    let dev = RamDevice::new(256, 10);
    format(&dev, 8, 16);
    let mut s = BlockingStore::open(&dev, small_cfg()).unwrap();
    let a = pattern(1, 4096);
    s.put_chunk(1, 0, &a, 4096, 1).unwrap();
    let lba = chunk_lba(&s, 1, 0);
    dev.hold_reads(true);
    let get = s.start(objstore::Request::Get { object: 1, chunk: 0 }).unwrap();
    s.delete(1).unwrap();
    // Rewrite one chunk over and over: the next-fit allocator walks the whole data area.
    let data_blocks = s.store().superblock().geometry.data_blocks;
    for i in 0..2 * data_blocks {
        s.put_chunk(2, 0, &pattern(100 + i, 4096), 4096, 1).unwrap();
        assert_ne!(chunk_lba(&s, 2, 0), lba, "block reused while a read of it is in flight");
    }
    dev.hold_reads(false);
    match s.wait(get).unwrap() {
        objstore::Reply::Get(d) => assert_eq!(&d[..], &a[..]),
        other => panic!("{other:?}"),
    }
    // Once the read is done the block is free again.
    s.quiesce();
    for i in 0..2 * data_blocks {
        s.put_chunk(2, 0, &pattern(500 + i, 4096), 4096, 1).unwrap();
        if chunk_lba(&s, 2, 0) == lba {
            return;
        }
    }
    panic!("block {lba} never reused after the read completed");
}
