//! The key-value store under the service: one trait, two backends.
//!
//! Keys and values are bytes; the service writes UTF-8 keys under `objmeta/` and JSON values
//! (the key layout is in `docs/objmeta.md`). Both backends give the same semantics, checked by
//! the same conformance tests (`tests/common`):
//!
//! * `get` of a missing key is `Ok(None)`; `delete` says whether the key existed;
//! * `list_prefix` returns keys in ascending byte order, only keys starting with `prefix`,
//!   only keys strictly greater than `start_after` when given, at most `limit` of them;
//! * `compare_and_swap(key, expected, new)` atomically checks that the current value is
//!   `expected` (`None`: the key is absent) and, if so, sets it to `new` (`None`: deletes it),
//!   returning whether it did;
//! * every mutation that returned `Ok` is durable (embedded: fsync'd; etcd: committed by raft).

mod embedded;
mod etcd;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;

use crate::error::StoreError;

/// A key-value pair.
pub type Kv = (Vec<u8>, Vec<u8>);

/// The store interface the service needs.
pub trait MetaStore: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; `Ok(true)` when it existed.
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError>;
    /// Keys starting with `prefix`, strictly after `start_after` (when given), ascending, at
    /// most `limit`.
    fn list_prefix(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<Vec<Kv>, StoreError>;
    /// Sets `key` to `new` (deletes it for `None`) only if its value is `expected` (absent for
    /// `None`). `Ok(true)` when the swap happened.
    fn compare_and_swap(&self, key: &[u8], expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, StoreError>;
}

impl<S: MetaStore + ?Sized> MetaStore for Box<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        (**self).delete(key)
    }
    fn list_prefix(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<Vec<Kv>, StoreError> {
        (**self).list_prefix(prefix, start_after, limit)
    }
    fn compare_and_swap(&self, key: &[u8], expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, StoreError> {
        (**self).compare_and_swap(key, expected, new)
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's `range_end` for a
/// prefix), or `None` when there is none (the prefix is empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Opens a store from a spec: `embedded:/path/to/file` or `etcd:http://host:port`.
pub fn open(spec: &str) -> Result<Box<dyn MetaStore>, StoreError> {
    if let Some(path) = spec.strip_prefix("embedded:") {
        Ok(Box::new(EmbeddedStore::open(path)?))
    } else if let Some(url) = spec.strip_prefix("etcd:") {
        Ok(Box::new(EtcdStore::connect(url)?))
    } else {
        Err(StoreError::Spec(format!("store {spec:?}: expected embedded:/path or etcd:http://host:port")))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
