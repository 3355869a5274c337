//! The etcd v3 backend, through etcd's JSON gRPC gateway (`POST /v3/kv/...`), so no protobuf
//! or gRPC dependency: keys and values travel base64-encoded in JSON, 64-bit integers as
//! strings.
//!
//! * get: `/v3/kv/range {key}`; list: `/v3/kv/range {key: max(prefix, after+"\0"),
//!   range_end: prefix_end(prefix), limit}` (etcd returns keys in ascending byte order);
//! * put: `/v3/kv/put`; delete: `/v3/kv/deleterange` (`deleted` says whether it existed);
//! * compare-and-swap: `/v3/kv/txn` with one compare — `VALUE == expected`, or
//!   `CREATE revision == 0` for "absent" — and one put or delete on success; `succeeded`
//!   says whether it applied.
//!
//! Every call is one HTTP request on a fresh connection with a 10 s timeout. Limits: one
//! endpoint (no client-side failover between cluster members), no TLS or authentication.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{prefix_end, Kv, MetaStore};
use crate::error::StoreError;
use crate::http;

/// An etcd v3 cluster member reached over HTTP.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    /// `host:port`.
    addr: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn unb64(s: &str) -> Result<Vec<u8>, StoreError> {
    B64.decode(s).map_err(|e| StoreError::Etcd(format!("bad base64 from etcd: {e}")))
}

fn err(msg: impl Into<String>) -> StoreError {
    StoreError::Etcd(msg.into())
}

impl EtcdStore {
    /// A store on the etcd member at `url` (`http://host:port`). Checks `/health` once.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let addr = url
            .strip_prefix("http://")
            .ok_or_else(|| err(format!("{url}: only http:// endpoints are supported")))?
            .trim_end_matches('/')
            .to_string();
        let s = Self { addr, timeout: Duration::from_secs(10) };
        s.health()?;
        Ok(s)
    }

    /// Whether the member reports itself healthy (`GET /health`).
    pub fn health(&self) -> Result<(), StoreError> {
        let (status, body) = http::call(&self.addr, "GET", "/health", None, self.timeout)
            .map_err(|e| err(format!("{}: {e}", self.addr)))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && v["health"] == "true" {
            Ok(())
        } else {
            Err(err(format!("{} unhealthy: {status} {}", self.addr, String::from_utf8_lossy(&body))))
        }
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, StoreError> {
        let body = serde_json::to_vec(body).expect("JSON of a Value");
        let (status, resp) = http::call(&self.addr, "POST", path, Some(&body), self.timeout)
            .map_err(|e| err(format!("{}{path}: {e}", self.addr)))?;
        let v: Value = serde_json::from_slice(&resp)
            .map_err(|e| err(format!("{path}: {status}, not JSON ({e}): {}", String::from_utf8_lossy(&resp))))?;
        if status != 200 {
            let msg = v["message"].as_str().or(v["error"].as_str()).unwrap_or("");
            return Err(err(format!("{path}: HTTP {status}: {msg}")));
        }
        Ok(v)
    }

    fn range(&self, req: Value) -> Result<Vec<Kv>, StoreError> {
        let v = self.post("/v3/kv/range", &req)?;
        let r: RangeResponse = serde_json::from_value(v).map_err(|e| err(format!("range response: {e}")))?;
        r.kvs.into_iter().map(|kv| Ok((unb64(&kv.key)?, unb64(&kv.value)?))).collect()
    }
}

fn int_field(v: &Value, name: &str) -> u64 {
    match &v[name] {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

impl MetaStore for EtcdStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.range(json!({ "key": b64(key) }))?.into_iter().next().map(|(_, v)| v))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.post("/v3/kv/put", &json!({ "key": b64(key), "value": b64(value) }))?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let v = self.post("/v3/kv/deleterange", &json!({ "key": b64(key) }))?;
        Ok(int_field(&v, "deleted") > 0)
    }

    fn list_prefix(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<Vec<Kv>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = match start_after {
            Some(s) if s >= prefix => {
                let mut k = s.to_vec();
                k.push(0);
                k
            }
            _ => prefix.to_vec(),
        };
        // An empty prefix means every key: range_end "\0" in etcd.
        let end = prefix_end(prefix).unwrap_or_else(|| vec![0]);
        if start.is_empty() && end == [0] {
            // etcd refuses an empty key; "\0" is the smallest non-empty key.
            return self.list_prefix(prefix, Some(&[]), limit);
        }
        let kvs = self.range(json!({
            "key": b64(&start),
            "range_end": b64(&end),
            "limit": limit.to_string(),
        }))?;
        Ok(kvs.into_iter().filter(|(k, _)| k.starts_with(prefix)).collect())
    }

    fn compare_and_swap(&self, key: &[u8], expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, StoreError> {
        let k = b64(key);
        let compare = match expected {
            Some(v) => json!({ "target": "VALUE", "key": k, "result": "EQUAL", "value": b64(v) }),
            None => {
                json!({ "target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0" })
            }
        };
        let op = match new {
            Some(v) => json!({ "request_put": { "key": k, "value": b64(v) } }),
            None => json!({ "request_delete_range": { "key": k } }),
        };
        let v = self.post("/v3/kv/txn", &json!({ "compare": [compare], "success": [op], "failure": [] }))?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }
}
