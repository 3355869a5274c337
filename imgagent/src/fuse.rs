//! The FUSE file system: one read-only directory with one regular file per image the agent
//! knows (`<state>/fuse/<name>`, the size of the image). Reads go to [`Agent::read`], which
//! answers from the cache or once the missing chunks arrived; the FUSE thread never waits for
//! a fetch (the reply is sent from the fetch thread).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};

use crate::agent::Agent;

const TTL: Duration = Duration::from_secs(1);

/// See the module doc.
pub struct ImageFs {
    pub agent: Arc<Agent>,
}

fn attr(ino: u64, size: u64, dir: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: if dir { FileType::Directory } else { FileType::RegularFile },
        perm: if dir { 0o555 } else { 0o444 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for ImageFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) != 1 {
            return reply.error(Errno::ENOENT);
        }
        match name.to_str().and_then(|n| self.agent.lookup(n)) {
            Some(img) => reply.entry(&TTL, &attr(img.ino, img.manifest.size, false), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = u64::from(ino);
        if ino == 1 {
            return reply.attr(&TTL, &attr(1, 0, true));
        }
        match self.agent.by_ino(ino) {
            Some(img) => reply.attr(&TTL, &attr(ino, img.manifest.size, false)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.agent.by_ino(u64::from(ino)) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.agent.read(
            u64::from(ino),
            offset,
            size,
            Box::new(move |r| match r {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(Errno::from_i32(e)),
            }),
        );
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if u64::from(ino) != 1 {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries =
            vec![(1u64, FileType::Directory, ".".to_string()), (1, FileType::Directory, "..".to_string())];
        entries.extend(self.agent.list().iter().map(|i| (i.ino, FileType::RegularFile, i.name.clone())));
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
