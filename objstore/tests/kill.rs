//! A real process crash on the io_uring backend: a child process (this test binary, re-executed)
//! streams puts to a file through `Store`'s non-blocking API, printing each object's start and
//! acknowledgement; the parent SIGKILLs it at a random point, remounts the file and checks that
//! every acknowledged object is there and correct, and that objects in flight are whole or absent
//! chunk by chunk (never a checksum error, never bytes that were not written).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{dev_file, pattern, Rng};
use objstore::blk::{UringDevice, UringOptions};
use objstore::index::{chunk_count, chunk_len, CHUNK_SIZE};
use objstore::store::FormatOptions;
use objstore::{BlockingStore, Error, Request, Store, StoreCompletion, StoreConfig};

const CHILD_ENV: &str = "OBJSTORE_KILL_CHILD";
const SIZES: [u64; 5] = [1, 4096, 5000, 3 * 4096 + 7, 0];
const MAX_OBJECTS: u64 = 3000;

/// Object `id` at `version`: its size and content key.
fn spec(id: u64, version: u64) -> (u64, u64) {
    (SIZES[((id + version) % SIZES.len() as u64) as usize], id * 1000 + version)
}

fn child(path: &str) {
    let dev = UringDevice::open(path, UringOptions::default()).expect("open");
    let mut store = Store::open(&dev, StoreConfig { max_requests: 32, checkpoint_depth: 4 }).expect("mount");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Per tag: (object, version); per object-version: chunks still to be acknowledged.
    let mut tags: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut remaining: HashMap<(u64, u64), u64> = HashMap::new();
    let mut done: Vec<StoreCompletion> = Vec::new();
    let mut next_tag = 1;
    let mut rng = Rng::new(7);
    for n in 0..MAX_OBJECTS {
        // Mostly new objects; every fourth, a new version of a recent one.
        let (id, version) = if n % 4 == 3 && n > 10 { (n - 1 - rng.below(10), 2 + n) } else { (n, 1) };
        let (size, key) = spec(id, version);
        let data = pattern(key, size as usize);
        writeln!(out, "START {id} {version}").ok();
        out.flush().ok();
        let chunks = chunk_count(size).max(1);
        remaining.insert((id, version), chunks);
        for c in 0..chunks as u32 {
            let lo = c as usize * CHUNK_SIZE;
            let piece = &data[lo..lo + chunk_len(size, c)];
            let req = Request::Put { object: id as u128, chunk: c, data: piece, size, version };
            loop {
                match store.submit(req, next_tag) {
                    Ok(()) => break,
                    Err(Error::Busy) => {}
                    Err(e) => panic!("child: submit: {e}"),
                }
                store.poll(&mut done);
                report(&mut done, &mut tags, &mut remaining, &mut out);
            }
            tags.insert(next_tag, (id, version));
            next_tag += 1;
        }
        store.poll(&mut done);
        report(&mut done, &mut tags, &mut remaining, &mut out);
    }
    while !store.is_idle() {
        store.poll(&mut done);
        report(&mut done, &mut tags, &mut remaining, &mut out);
    }
    writeln!(out, "DONE").ok();
}

fn report(
    done: &mut Vec<StoreCompletion>,
    tags: &mut HashMap<u64, (u64, u64)>,
    remaining: &mut HashMap<(u64, u64), u64>,
    out: &mut impl Write,
) {
    for c in done.drain(..) {
        let key = tags.remove(&c.tag).expect("tag");
        match c.result {
            Ok(_) => {
                let r = remaining.get_mut(&key).expect("object");
                *r -= 1;
                if *r == 0 {
                    remaining.remove(&key);
                    writeln!(out, "ACK {} {}", key.0, key.1).ok();
                    out.flush().ok();
                }
            }
            // A version-1 put committed after the version-2 one: fine, not acknowledged.
            Err(Error::StaleVersion { .. }) => {}
            Err(e) => panic!("child: {e}"),
        }
    }
}

#[test]
fn kill9_during_put_stream_on_uring_file() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    for round in 0..3u64 {
        let f = dev_file(64 << 20);
        let dev = UringDevice::open(&f.path, UringOptions::default()).unwrap();
        Store::format(&dev, FormatOptions { max_objects: MAX_OBJECTS + 10, journal_blocks: 64 }).unwrap();
        drop(dev);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill9_during_put_stream_on_uring_file", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &f.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let kill_after = 100 + Rng::new(round + 1).below(400);
        let mut started: HashMap<u64, Vec<u64>> = HashMap::new(); // object -> versions started
        let mut acked: HashMap<u64, u64> = HashMap::new(); // object -> highest acked version
        let mut acks = 0;
        let mut killed = false;
        let reader = BufReader::new(child.stdout.take().unwrap());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["START", id, v] => started.entry(id.parse().unwrap()).or_default().push(v.parse().unwrap()),
                ["ACK", id, v] => {
                    let (id, v): (u64, u64) = (id.parse().unwrap(), v.parse().unwrap());
                    let e = acked.entry(id).or_insert(0);
                    *e = (*e).max(v);
                    acks += 1;
                    if acks == kill_after && !killed {
                        child.kill().expect("SIGKILL child");
                        killed = true;
                    }
                }
                _ => {}
            }
        }
        child.wait().unwrap();
        assert!(killed, "child finished before the kill; raise MAX_OBJECTS");

        let dev = UringDevice::open(&f.path, UringOptions::default()).unwrap();
        let mut s = BlockingStore::open(&dev, StoreConfig::default()).unwrap();
        for (&id, versions) in &started {
            let newest_started = *versions.iter().max().unwrap();
            match s.stat(id as u128) {
                Ok(info) => {
                    assert!(
                        versions.contains(&info.version),
                        "round {round}: object {id} at unknown version {}",
                        info.version
                    );
                    let (size, key) = spec(id, info.version);
                    assert_eq!(info.size, size);
                    let want = pattern(key, size as usize);
                    for c in 0..info.chunks {
                        match s.get_chunk(id as u128, c) {
                            Ok(d) => {
                                let lo = c as usize * CHUNK_SIZE;
                                assert_eq!(d, want[lo..lo + d.len()], "round {round}: object {id} chunk {c}");
                            }
                            Err(Error::ChunkMissing { .. }) => {
                                // Only an unacknowledged version may be partial.
                                assert_ne!(
                                    acked.get(&id),
                                    Some(&info.version),
                                    "round {round}: acked object {id} lost chunk {c}"
                                );
                            }
                            Err(e) => panic!("round {round}: object {id} chunk {c}: {e}"),
                        }
                    }
                    if let Some(&a) = acked.get(&id) {
                        assert!(info.version >= a, "round {round}: object {id} went back from acked version {a}");
                    }
                }
                Err(Error::NotFound(_)) => {
                    assert!(
                        !acked.contains_key(&id),
                        "round {round}: acknowledged object {id} (newest started {newest_started}) lost"
                    );
                }
                Err(e) => panic!("round {round}: stat {id}: {e}"),
            }
        }
        eprintln!(
            "round {round}: killed after {acks} acks, {} objects started, all acknowledged ones intact",
            started.len()
        );
    }
}
