//! Storage on the node: the object service on the workers ([`service`]) and
//! what SRv6 storage steering sees of it ([`LocalService`]: queue depth,
//! which objects are here, how to answer a probe).
//!
//! The packet-path side lives in the pipeline: a request to a replica
//! address (the object prefix plus the object id, UDP to the service port)
//! is handed off to the worker that owns the object
//! ([`crate::pipeline::HandOff::Storage`]); a request steered to a storage
//! SID is accepted or passed by [`crate::pipeline::srv6`].

pub mod service;

use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::stats::Gauge;
use netwire::storage;

/// The local storage service as steering sees it: how loaded it is, what it
/// holds, and how it answers an accepted request. With `storage:`
/// configured it is the worker's [`service::ObjectService`] seen through
/// [`LoadView`]; without it, the built-in [`Responder`] answers probes.
pub trait LocalService: Send {
    /// Requests waiting in the local queue now.
    fn queue_depth(&self) -> u32;
    /// Whether this node holds `object_id`.
    fn holds(&self, object_id: u64) -> bool;
    /// Answers `request`, accepted by `accepted_by`: writes the reply's UDP
    /// payload into `reply` and returns its length.
    fn serve(&mut self, request: &storage::Repr, accepted_by: Ipv6Addr, reply: &mut [u8]) -> usize;
    /// The UDP port requests are sent to.
    fn udp_port(&self) -> u16;
}

/// The built-in responder: answers probes with the accepting node and its
/// (configured) queue depth, and every other op with `unsupported`.
#[derive(Debug, Clone)]
pub struct Responder {
    pub udp_port: u16,
    pub queue_depth: u32,
    /// Sorted object ids this node holds.
    pub objects: Vec<u64>,
}

impl LocalService for Responder {
    fn queue_depth(&self) -> u32 {
        self.queue_depth
    }
    fn holds(&self, object_id: u64) -> bool {
        self.objects.binary_search(&object_id).is_ok()
    }
    fn serve(&mut self, request: &storage::Repr, accepted_by: Ipv6Addr, reply: &mut [u8]) -> usize {
        let op = storage::Op(request.op);
        let (status, body) = if op == storage::Op::PROBE {
            (storage::status::OK, Some(storage::ProbeReply { accepted_by, queue_depth: self.queue_depth }))
        } else {
            (storage::status::UNSUPPORTED, None)
        };
        let body_len = body.map_or(0, |_| storage::ProbeReply::LEN);
        let hdr = storage::Repr {
            op: op.reply().0,
            status,
            flags: 0,
            request_id: request.request_id,
            object_id: request.object_id,
            offset: 0,
            length: body_len as u32,
        };
        let Ok(n) = hdr.emit(reply) else { return 0 };
        match body {
            Some(b) => n + b.emit(&mut reply[n..]).unwrap_or(0),
            None => n,
        }
    }
    fn udp_port(&self) -> u16 {
        self.udp_port
    }
}

/// What SRv6 storage steering sees of the service: its queue depth (the
/// requests held now) read from the worker's service, the rest from the
/// configured responder (the UDP port; `holds-object` from the configured
/// list).
pub struct LoadView {
    pub load: Arc<Gauge>,
    pub responder: Responder,
}

impl LocalService for LoadView {
    fn queue_depth(&self) -> u32 {
        self.load.get() as u32
    }
    fn holds(&self, object_id: u64) -> bool {
        self.responder.holds(object_id)
    }
    fn serve(&mut self, request: &storage::Repr, accepted_by: Ipv6Addr, reply: &mut [u8]) -> usize {
        self.responder.serve(request, accepted_by, reply)
    }
    fn udp_port(&self) -> u16 {
        self.responder.udp_port
    }
}
