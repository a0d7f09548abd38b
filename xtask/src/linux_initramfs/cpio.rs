//! The `newc` cpio archive the kernel unpacks as its initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst): written from a sorted tree with
//! fixed inode numbers, owner 0, mtime 0, so the same tree gives the same bytes.

use std::collections::BTreeMap;

/// One node of the tree, keyed by its path without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory (mode bits 0o755).
    Dir,
    /// A regular file with its permission bits.
    File { mode: u32, bytes: Vec<u8> },
    /// A symbolic link to `target`.
    Symlink(String),
    /// A character device node (`/dev/console`: the kernel opens it for init's standard streams
    /// before any devtmpfs is mounted).
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// A tree of nodes; parent directories are added by [`Tree::insert`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// Why a node cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("`{0}` is not a relative path of normal components")]
    BadPath(String),
    #[error("`{path}` is added twice with different contents")]
    Conflict { path: String },
    #[error("`{parent}` is a file, so `{path}` cannot be under it")]
    ParentNotDir { parent: String, path: String },
}

impl Tree {
    /// Adds `node` at `path` (relative, `/`-separated, no `.` or `..`) and every missing parent
    /// directory. Adding the same node twice is allowed; a different node at a taken path is not.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(TreeError::BadPath(path.to_owned()));
        }
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            let parent = &path[..at + slash];
            match self.nodes.get(parent) {
                None => {
                    self.nodes.insert(parent.to_owned(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => {
                    return Err(TreeError::ParentNotDir {
                        parent: parent.to_owned(),
                        path: path.to_owned(),
                    });
                }
            }
            at += slash + 1;
        }
        match self.nodes.get(path) {
            Some(existing) if *existing != node => Err(TreeError::Conflict {
                path: path.to_owned(),
            }),
            Some(_) => Ok(()),
            None => {
                self.nodes.insert(path.to_owned(), node);
                Ok(())
            }
        }
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every node, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
/// The name of the archive's last entry.
pub const TRAILER: &str = "TRAILER!!!";

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    data: &'a [u8],
    rdev: (u32, u32),
}

fn write_entry(out: &mut Vec<u8>, name: &str, h: &Header<'_>) {
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        0, // mtime
        u32::try_from(h.data.len()).expect("initramfs members are below 4 GiB"),
        0, // devmajor
        0, // devminor
        h.rdev.0,
        h.rdev.1,
        u32::try_from(name.len() + 1).expect("short names"),
        0, // check (newc, not crc)
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(h.data);
    pad4(out);
}

/// The tree as a `newc` archive: entries in path order (parents first), inode numbers 1, 2, ...
/// in that order, owner and group 0, mtime 0, then the trailer.
pub fn write_newc(tree: &Tree) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (path, node)) in tree.iter().enumerate() {
        let ino = u32::try_from(index + 1).expect("fewer than 2^32 entries");
        let header = match node {
            Node::Dir => Header {
                ino,
                mode: S_IFDIR | 0o755,
                nlink: 2,
                data: &[],
                rdev: (0, 0),
            },
            Node::File { mode, bytes } => Header {
                ino,
                mode: S_IFREG | (mode & 0o7777),
                nlink: 1,
                data: bytes,
                rdev: (0, 0),
            },
            Node::Symlink(target) => Header {
                ino,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                data: target.as_bytes(),
                rdev: (0, 0),
            },
            Node::CharDevice { mode, major, minor } => Header {
                ino,
                mode: S_IFCHR | (mode & 0o7777),
                nlink: 1,
                data: &[],
                rdev: (*major, *minor),
            },
        };
        write_entry(&mut out, path, &header);
    }
    write_entry(
        &mut out,
        TRAILER,
        &Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            data: &[],
            rdev: (0, 0),
        },
    );
    out
}

/// Gzip of `bytes` that depends on nothing but the bytes: no file name, mtime 0, OS "unknown",
/// best compression (flate2's pure-Rust backend, whose output Cargo.lock pins).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}
