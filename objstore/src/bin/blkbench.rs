//! blkbench: 4 KiB random reads through the objstore block path (one `UringDevice` queue pair,
//! `O_DIRECT`, registered buffers and file), one core, fixed queue depth; prints IOPS and
//! p50/p99 completion latency (submit to reap, like fio's clat plus submission).
//!
//! ```text
//! blkbench --file PATH [--seconds 10] [--qd 32] [--blocks-per-io 1] [--iopoll auto|off|required]
//!          [--no-fixed-buffers] [--seed N] [--mode raw|store]
//! ```
//! `--mode store` instead formats the file as an object store (destroying its contents) and
//! measures 4 KiB object PUTs (each acknowledged only once durable: data, flush, journal
//! record, flush, group-committed) for `--seconds`, then random 4 KiB GETs of those objects
//! (CRC32C verified) for `--seconds`, each with `--qd` requests in flight.
//! The file must exist and have been written (reads of holes or unwritten extents never reach
//! the device); `objstore/bench.sh` prepares one and runs fio on it in the same run.

use std::time::{Duration, Instant};

use objstore::blk::{BlockDevice, DmaPool, Io, IopollMode, UringDevice, UringOptions, BLOCK_SIZE};

struct Args {
    file: String,
    seconds: f64,
    qd: u32,
    blocks: u32,
    iopoll: IopollMode,
    fixed: bool,
    seed: u64,
    store: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: blkbench --file PATH [--seconds 10] [--qd 32] [--blocks-per-io 1] \
         [--iopoll auto|off|required] [--no-fixed-buffers] [--seed N] [--mode raw|store]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        file: String::new(),
        seconds: 10.0,
        qd: 32,
        blocks: 1,
        iopoll: IopollMode::Auto,
        fixed: true,
        seed: 1,
        store: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--file" => a.file = val(),
            "--seconds" => a.seconds = val().parse().unwrap_or_else(|_| usage()),
            "--qd" => a.qd = val().parse().unwrap_or_else(|_| usage()),
            "--blocks-per-io" => a.blocks = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => a.seed = val().parse().unwrap_or_else(|_| usage()),
            "--iopoll" => {
                a.iopoll = match val().as_str() {
                    "auto" => IopollMode::Auto,
                    "off" => IopollMode::Off,
                    "required" => IopollMode::Required,
                    _ => usage(),
                }
            }
            "--no-fixed-buffers" => a.fixed = false,
            "--mode" => {
                a.store = match val().as_str() {
                    "raw" => false,
                    "store" => true,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    if a.file.is_empty() || a.qd == 0 || a.blocks == 0 {
        usage();
    }
    a
}

/// Latency histogram: 100 ns buckets up to 100 ms, one overflow bucket. Allocated up front.
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const BUCKET_NS: u64 = 100;

impl Histogram {
    fn new() -> Histogram {
        Histogram { buckets: vec![0; 1_000_001], count: 0 }
    }
    fn record(&mut self, d: Duration) {
        let i = ((d.as_nanos() as u64) / BUCKET_NS).min(self.buckets.len() as u64 - 1);
        self.buckets[i as usize] += 1;
        self.count += 1;
    }
    fn percentile_us(&self, p: f64) -> f64 {
        let target = ((self.count as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return ((i as u64 + 1) * BUCKET_NS) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

fn main() {
    let args = parse();
    let dev = match UringDevice::open(&args.file, UringOptions { iopoll: args.iopoll, fixed_buffers: args.fixed }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("blkbench: {e}");
            std::process::exit(1);
        }
    };
    if args.store {
        return store_bench(&dev, &args);
    }
    let pool = match DmaPool::new(args.qd as usize, args.blocks as usize) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("blkbench: {e}");
            std::process::exit(1);
        }
    };
    let mut qp = match dev.queue_pair(args.qd, &pool) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("blkbench: {e}");
            std::process::exit(1);
        }
    };
    let span = dev.num_blocks() / u64::from(args.blocks);
    let mut rng = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next_lba = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % span) * u64::from(args.blocks)
    };
    let mut started = vec![Instant::now(); args.qd as usize];
    let mut hist = Histogram::new();
    let mut out = Vec::with_capacity(args.qd as usize);
    let mut errors = 0u64;

    // Fill the queue.
    for slot in 0..args.qd {
        let Some(buf) = pool.alloc() else { break };
        started[slot as usize] = Instant::now();
        if let Err(r) = qp.submit(Io::read(next_lba(), args.blocks, buf, u64::from(slot))) {
            eprintln!("blkbench: submit refused: {}", r.reason);
            std::process::exit(1);
        }
    }
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.seconds);
    let mut stopping = false;
    while qp.in_flight() > 0 {
        qp.poll(&mut out);
        if out.is_empty() {
            continue;
        }
        let now = Instant::now();
        if !stopping && now >= deadline {
            stopping = true;
        }
        for c in out.drain(..) {
            let slot = c.tag as usize;
            if c.result.is_err() {
                errors += 1;
            } else if !stopping {
                hist.record(now - started[slot]);
            }
            if stopping {
                continue; // drain; the buffer goes back to the pool
            }
            let Some(buf) = c.buf else { continue };
            started[slot] = now;
            if let Err(r) = qp.submit(Io::read(next_lba(), args.blocks, buf, c.tag)) {
                eprintln!("blkbench: resubmit refused: {}", r.reason);
                std::process::exit(1);
            }
        }
    }
    let elapsed = deadline.min(Instant::now()).duration_since(t0).as_secs_f64();
    let iops = hist.count as f64 / elapsed;
    println!(
        "blkbench: {} qd={} bs={} hugepages={} fixed_buffers={} errors={}",
        dev.describe(),
        args.qd,
        args.blocks as usize * BLOCK_SIZE,
        pool.is_hugepage(),
        args.fixed,
        errors
    );
    println!(
        "blkbench: {} ios in {:.2} s: IOPS {:.0}  p50 {:.1} us  p99 {:.1} us",
        hist.count,
        elapsed,
        iops,
        hist.percentile_us(0.50),
        hist.percentile_us(0.99)
    );
    // One machine-readable line for scripts.
    println!("RESULT iops={:.0} p50_us={:.1} p99_us={:.1}", iops, hist.percentile_us(0.50), hist.percentile_us(0.99));
    if errors > 0 {
        std::process::exit(1);
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("blkbench: {e}");
    std::process::exit(1)
}

/// Object PUT then GET phases through `Store`'s non-blocking API, `qd` requests in flight.
fn store_bench(dev: &UringDevice, args: &Args) {
    use objstore::store::FormatOptions;
    use objstore::{Error, Request, Store, StoreConfig};

    let blocks = dev.num_blocks();
    let sb = Store::format(dev, FormatOptions { max_objects: blocks.min(1 << 20), journal_blocks: 0 })
        .unwrap_or_else(|e| fail(e));
    let mut store = Store::open(dev, StoreConfig { max_requests: args.qd as usize, checkpoint_depth: 8 })
        .unwrap_or_else(|e| fail(e));
    let capacity = sb.geometry.reservable();
    let qd = args.qd as usize;
    let data: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i * 7 + 3) as u8).collect();
    let mut started = vec![Instant::now(); qd];
    let mut out = Vec::with_capacity(2 * qd);

    // PUT phase: new objects of one 4 KiB chunk.
    let mut hist = Histogram::new();
    let mut next_obj: u64 = 0;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.seconds);
    let mut free_tags: Vec<usize> = (0..qd).collect();
    loop {
        let now = Instant::now();
        while now < deadline && next_obj < capacity {
            let Some(&t) = free_tags.last() else { break };
            let req = Request::Put {
                object: u128::from(next_obj),
                chunk: 0,
                data: &data,
                size: BLOCK_SIZE as u64,
                version: 1,
            };
            match store.submit(req, t as u64) {
                Ok(()) => {
                    free_tags.pop();
                    started[t] = Instant::now();
                    next_obj += 1;
                }
                Err(Error::Busy) => break,
                Err(e) => fail(e),
            }
        }
        if free_tags.len() == qd && (now >= deadline || next_obj >= capacity) {
            break;
        }
        store.poll(&mut out);
        let now = Instant::now();
        for c in out.drain(..) {
            if let Err(e) = c.result {
                fail(e);
            }
            hist.record(now - started[c.tag as usize]);
            free_tags.push(c.tag as usize);
        }
    }
    let put_secs = t0.elapsed().as_secs_f64();
    let st = *store.stats();
    println!(
        "blkbench store: {} objects capacity, qd={}, {} journal records for {} puts ({:.1} per group), {} checkpoints",
        capacity,
        qd,
        st.journal_records,
        st.puts,
        st.puts as f64 / st.journal_records.max(1) as f64,
        st.checkpoints
    );
    let put_ops = hist.count as f64 / put_secs;
    println!(
        "blkbench store PUT 4 KiB: {} ops in {:.2} s: {:.0} ops/s  p50 {:.1} us  p99 {:.1} us",
        hist.count,
        put_secs,
        put_ops,
        hist.percentile_us(0.50),
        hist.percentile_us(0.99)
    );
    let put = (put_ops, hist.percentile_us(0.50), hist.percentile_us(0.99));

    // GET phase: random objects among those written.
    if next_obj == 0 {
        fail("no object written");
    }
    let mut hist = Histogram::new();
    let mut rng = args.seed | 1;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(args.seconds);
    let mut free_tags: Vec<usize> = (0..qd).collect();
    loop {
        let now = Instant::now();
        while let Some(&t) = free_tags.last().filter(|_| now < deadline) {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let object = u128::from(rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % next_obj);
            match store.submit(Request::Get { object, chunk: 0 }, t as u64) {
                Ok(()) => {
                    free_tags.pop();
                    started[t] = Instant::now();
                }
                Err(Error::Busy) => break,
                Err(e) => fail(e),
            }
        }
        if free_tags.len() == qd && now >= deadline {
            break;
        }
        store.poll(&mut out);
        let now = Instant::now();
        for c in out.drain(..) {
            match c.result {
                Ok(reply) => drop(reply),
                Err(e) => fail(e),
            }
            hist.record(now - started[c.tag as usize]);
            free_tags.push(c.tag as usize);
        }
    }
    let get_secs = t0.elapsed().as_secs_f64();
    let get_ops = hist.count as f64 / get_secs;
    println!(
        "blkbench store GET 4 KiB: {} ops in {:.2} s: {:.0} ops/s  p50 {:.1} us  p99 {:.1} us",
        hist.count,
        get_secs,
        get_ops,
        hist.percentile_us(0.50),
        hist.percentile_us(0.99)
    );
    println!(
        "RESULT put_ops={:.0} put_p50_us={:.1} put_p99_us={:.1} get_ops={:.0} get_p50_us={:.1} get_p99_us={:.1}",
        put.0,
        put.1,
        put.2,
        get_ops,
        hist.percentile_us(0.50),
        hist.percentile_us(0.99)
    );
}
