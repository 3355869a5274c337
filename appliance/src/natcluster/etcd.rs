//! The cluster's ownership store on etcd, through etcd's v3 JSON gateway
//! (`POST /v3/kv/range`, `/v3/kv/txn`; keys and values base64, 64-bit
//! integers as strings), as objmeta talks to it: no gRPC dependency.
//!
//! ```text
//!  /appliance/nat/<name>/owner/<shard>  = "host=<id> inc=<incarnation hex>"   mod_revision = epoch
//!  /appliance/nat/<name>/beat/<shard>   = "host=<id> inc=<incarnation hex>"   rewritten every beat
//! ```
//!
//! One HTTP/1.1 keep-alive connection to one member at a time; on any error
//! the next call tries the next member (every call is linearizable: the
//! gateway's default). Runs on the agent's thread, never on an lcore.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use dataplane::nat::cluster::agent::{OwnerRecord, OwnerStore, StoreError};

/// etcd members and the key prefix.
pub struct EtcdOwners {
    endpoints: Vec<String>,
    current: usize,
    conn: Option<BufReader<TcpStream>>,
    timeout: Duration,
    prefix: String,
}

fn err(msg: impl Into<String>) -> StoreError {
    StoreError(msg.into())
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// `"host=<id> inc=<hex>"` → (host, incarnation).
fn parse_owner(value: &[u8]) -> Option<(u16, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut host = None;
    let mut inc = None;
    for part in text.split_whitespace() {
        if let Some(h) = part.strip_prefix("host=") {
            host = h.parse().ok();
        } else if let Some(i) = part.strip_prefix("inc=") {
            inc = u64::from_str_radix(i, 16).ok();
        }
    }
    Some((host?, inc?))
}

impl EtcdOwners {
    /// A store on `endpoints` (`host:port`) under `/appliance/nat/<name>/`.
    pub fn new(endpoints: Vec<String>, name: &str, timeout: Duration) -> EtcdOwners {
        EtcdOwners { endpoints, current: 0, conn: None, timeout, prefix: format!("/appliance/nat/{name}/") }
    }

    fn key(&self, kind: &str, shard: u16) -> String {
        format!("{}{kind}/{shard}", self.prefix)
    }

    fn connect(&mut self) -> Result<&mut BufReader<TcpStream>, StoreError> {
        if self.conn.is_none() {
            let ep = &self.endpoints[self.current % self.endpoints.len()];
            let addr = ep
                .to_socket_addrs()
                .map_err(|e| err(format!("{ep}: {e}")))?
                .next()
                .ok_or_else(|| err(format!("{ep}: no address")))?;
            let s = TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| err(format!("{ep}: {e}")))?;
            s.set_read_timeout(Some(self.timeout)).map_err(|e| err(e.to_string()))?;
            s.set_write_timeout(Some(self.timeout)).map_err(|e| err(e.to_string()))?;
            let _ = s.set_nodelay(true);
            self.conn = Some(BufReader::new(s));
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// One POST; on failure the connection is dropped and the next member
    /// is used next time.
    fn post(&mut self, path: &str, body: &Value) -> Result<Value, StoreError> {
        let r = self.try_post(path, body);
        if r.is_err() {
            self.conn = None;
            self.current += 1;
        }
        r
    }

    fn try_post(&mut self, path: &str, body: &Value) -> Result<Value, StoreError> {
        let body = serde_json::to_vec(body).expect("JSON of a Value");
        let host = self.endpoints[self.current % self.endpoints.len()].clone();
        let conn = self.connect()?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = conn.get_mut();
        s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body)).map_err(|e| err(format!("{host}: {e}")))?;
        let (status, resp) = read_response(conn).map_err(|e| err(format!("{host}{path}: {e}")))?;
        let v: Value = serde_json::from_slice(&resp).map_err(|e| err(format!("{path}: not JSON: {e}")))?;
        if status != 200 {
            return Err(err(format!("{path}: HTTP {status}: {}", v["message"].as_str().unwrap_or(""))));
        }
        Ok(v)
    }

    /// Every key under `<prefix><kind>/`: (shard, value, mod_revision).
    fn range(&mut self, kind: &str) -> Result<Vec<(u16, Vec<u8>, u64)>, StoreError> {
        let start = format!("{}{kind}/", self.prefix);
        let end = format!("{}{kind}0", self.prefix); // '/' + 1
        let v = self.post("/v3/kv/range", &json!({ "key": b64(&start), "range_end": b64(&end) }))?;
        let mut out = Vec::new();
        for kv in v["kvs"].as_array().map_or(&[][..], Vec::as_slice) {
            let key = B64.decode(kv["key"].as_str().unwrap_or("")).map_err(|e| err(e.to_string()))?;
            let value = B64.decode(kv["value"].as_str().unwrap_or("")).map_err(|e| err(e.to_string()))?;
            let Some(shard) = std::str::from_utf8(&key).ok().and_then(|k| k.strip_prefix(&start)?.parse().ok()) else {
                continue;
            };
            out.push((shard, value, int(&kv["mod_revision"])));
        }
        Ok(out)
    }

    fn value(host: u16, incarnation: u64) -> String {
        format!("host={host} inc={incarnation:x}")
    }

    /// A transaction: every compare (key, mod_revision) must hold; then the
    /// puts. `Some(revision)` of the transaction when it applied.
    fn txn(&mut self, compares: &[(String, u64)], puts: &[(String, String)]) -> Result<Option<u64>, StoreError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|(k, rev)| json!({ "target": "MOD", "key": b64(k), "result": "EQUAL", "mod_revision": rev.to_string() }))
            .collect();
        let success: Vec<Value> =
            puts.iter().map(|(k, v)| json!({ "request_put": { "key": b64(k), "value": b64(v) } })).collect();
        let v = self.post("/v3/kv/txn", &json!({ "compare": compare, "success": success, "failure": [] }))?;
        Ok(v["succeeded"].as_bool().unwrap_or(false).then(|| int(&v["header"]["revision"])))
    }
}

impl OwnerStore for EtcdOwners {
    fn owners(&mut self, shards: usize) -> Result<Vec<Option<OwnerRecord>>, StoreError> {
        let mut out = vec![None; shards];
        for (shard, value, revision) in self.range("owner")? {
            if let (Some(slot), Some((host, incarnation))) = (out.get_mut(usize::from(shard)), parse_owner(&value)) {
                *slot = Some(OwnerRecord { host, incarnation, revision });
            }
        }
        Ok(out)
    }

    fn beats(&mut self, shards: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = vec![0; shards];
        for (shard, _, revision) in self.range("beat")? {
            if let Some(slot) = out.get_mut(usize::from(shard)) {
                *slot = revision;
            }
        }
        Ok(out)
    }

    fn take(
        &mut self,
        shard: u16,
        owner_rev: u64,
        beat_rev: Option<u64>,
        host: u16,
        incarnation: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut compares = vec![(self.key("owner", shard), owner_rev)];
        if let Some(b) = beat_rev {
            compares.push((self.key("beat", shard), b));
        }
        let v = Self::value(host, incarnation);
        let puts = [(self.key("owner", shard), v.clone()), (self.key("beat", shard), v)];
        self.txn(&compares, &puts)
    }

    fn beat(&mut self, held: &[(u16, u64)], host: u16, incarnation: u64) -> Result<bool, StoreError> {
        let compares: Vec<(String, u64)> = held.iter().map(|&(s, e)| (self.key("owner", s), e)).collect();
        let v = Self::value(host, incarnation);
        let puts: Vec<(String, String)> = held.iter().map(|&(s, _)| (self.key("beat", s), v.clone())).collect();
        Ok(self.txn(&compares, &puts)?.is_some())
    }
}

/// Reads one HTTP/1.1 response: (status, body), by Content-Length or chunked.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status line"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("end of stream in the header"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|_| bad("chunk"))?;
            if n > 16 << 20 {
                return Err(bad("chunk too large"));
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..])?;
            line.clear();
            r.read_line(&mut line)?;
            if n == 0 {
                break;
            }
        }
    } else {
        let n = length.ok_or_else(|| bad("no Content-Length"))?;
        if n > 16 << 20 {
            return Err(bad("body too large"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_round_trip() {
        let v = EtcdOwners::value(3, 0xdead_beef_0001);
        assert_eq!(v, "host=3 inc=deadbeef0001");
        assert_eq!(parse_owner(v.as_bytes()), Some((3, 0xdead_beef_0001)));
        assert_eq!(parse_owner(b"host=x inc=1"), None);
        assert_eq!(parse_owner(b"inc=1"), None);
        let s = EtcdOwners::new(vec!["127.0.0.1:1".into()], "nat1", Duration::from_millis(10));
        assert_eq!(s.key("owner", 7), "/appliance/nat/nat1/owner/7");
    }
}
