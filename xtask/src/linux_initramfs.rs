//! `cargo xtask linux-initramfs [--out DIR]`: the initramfs of Slipway's Linux domains, built
//! reproducibly from Debian bookworm packages (docs/linux-kernel.md, "The initramfs", gives the
//! same steps for a fleet).
//!
//! 1. The root packages ([`ROOT_PACKAGES`]: busybox-static, tpm2-tools, libtss2-tcti-device0)
//!    at apt's candidate versions are fetched with `apt-get download` into
//!    `<target>/linux-initramfs/debs/` and checked against apt's SHA-256 (`linux_kernel`'s
//!    [`fetch_deb`], the kernel's own fetch), then unpacked with `dpkg-deb -x`.
//! 2. The library closure: starting from `/usr/bin/tpm2` and the TCTI the TSS loads at run time
//!    ([`DLOPENED`], not in any DT_NEEDED), every `DT_NEEDED` soname and the `PT_INTERP` loader
//!    (read with the `elf` crate) is looked up in the library directories of the packages
//!    already unpacked, else in the needing package's `Pre-Depends`/`Depends`, in order, each
//!    fetched and checked the same way, until one ships it (Debian's shlibs rules put a
//!    library's package among its users' dependencies). A soname no dependency provides is an
//!    error naming it.
//! 3. The tree: `/init` ([`render_init`]), busybox with `/bin/sh`, `tpm2` with its `tpm2_*`
//!    links, each library under its soname (the content of the file the soname link resolves
//!    to), the loader at its `PT_INTERP` path, `/dev/console`, and
//!    `/etc/slipway-initramfs.packages` (every package used, version and SHA-256).
//! 4. A `newc` cpio of the tree in path order, owner 0, mtime 0, fixed modes, gzip'ed with no
//!    name and mtime 0 (`cpio` module): the same packages give the same bytes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use elf::ElfBytes;
use elf::abi::{DT_NEEDED, PT_INTERP};
use elf::endian::LittleEndian;

use crate::linux_kernel::{DebPackage, KernelError, fetch_deb, record_field, resolve_candidate};
use crate::workspace::Workspace;

pub mod cpio;

use cpio::{Node, Tree};

/// The packages the initramfs is made of; everything else is found through their dependencies.
pub const ROOT_PACKAGES: [&str; 3] = ["busybox-static", "tpm2-tools", "libtss2-tcti-device0"];
/// busybox, statically linked, in `busybox-static`.
const BUSYBOX: (&str, &str) = ("busybox-static", "bin/busybox");
/// tpm2-tools 5.x: one binary; `tpm2_<tool>` are links to it.
const TPM2: (&str, &str) = ("tpm2-tools", "usr/bin/tpm2");
/// Libraries loaded with dlopen (so in no DT_NEEDED): the TSS's TCTI loader opens the device
/// TCTI that `TPM2TOOLS_TCTI=device:...` names.
pub const DLOPENED: [(&str, &str); 1] = [("libtss2-tcti-device0", "libtss2-tcti-device.so.0")];
/// Where sonames are looked up, in the loader's order (Debian multiarch first).
pub const LIBRARY_DIRS: [&str; 4] = [
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib",
    "usr/lib",
];
/// The TCTI tpm2-tools use: the kernel's resource manager.
pub const TCTI: &str = "device:/dev/tpmrm0";
/// The line prefix of the info role.
pub const INFO_PREFIX: &str = "info: ";
/// The manifest of packages inside the image.
pub const PACKAGES_FILE: &str = "etc/slipway-initramfs.packages";
/// The file name of the image.
pub const IMAGE_NAME: &str = "initramfs.cpio.gz";
/// Symlinks followed before a path is declared a loop.
const MAX_SYMLINKS: usize = 16;

/// Options of `cargo xtask linux-initramfs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args)]
pub struct LinuxInitramfsArgs {
    /// Where `initramfs.cpio.gz` and its package list go [default: <target>/linux-initramfs/]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Why the initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Fetch(#[from] KernelError),
    #[error("package {package}: no {path} (needed as {why})")]
    MissingFile {
        package: String,
        path: String,
        why: String,
    },
    #[error(
        "{needed_by} (package {package}) needs {soname}, which no package already unpacked \
         ships and none of its dependencies ({tried}) provides"
    )]
    UnresolvedLibrary {
        soname: String,
        needed_by: String,
        package: String,
        tried: String,
    },
    #[error("{path}: not an ELF the closure can read: {why}")]
    Elf { path: String, why: String },
    #[error("package {package}: {path}: {why}")]
    BadLink {
        package: String,
        path: String,
        why: String,
    },
    #[error(transparent)]
    Tree(#[from] cpio::TreeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitramfsError + '_ {
    move |source| InitramfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The package names of a `Depends`-style field, each entry's alternatives in order
/// (`a (>= 1) | b, c:any` gives `[[a, b], [c]]`).
pub fn parse_depends(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|entry| {
            entry
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split_whitespace().next()?;
                    let name = name.split(':').next().unwrap_or(name);
                    (!name.is_empty()).then(|| name.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|alts| !alts.is_empty())
        .collect()
}

/// An unpacked package.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub deb: DebPackage,
    /// `Pre-Depends` then `Depends`, alternatives per entry.
    pub depends: Vec<Vec<String>>,
    /// Where `dpkg-deb -x` put its files.
    pub root: PathBuf,
}

impl Unpacked {
    /// The file `path` (relative to the package root, or absolute inside it) resolves to, links
    /// followed inside the package; `None` if there is none.
    pub fn resolve(&self, path: &str) -> Result<Option<PathBuf>, InitramfsError> {
        let mut path = path.trim_start_matches('/').to_owned();
        for _ in 0..MAX_SYMLINKS {
            let on_disk = self.root.join(&path);
            let Ok(meta) = std::fs::symlink_metadata(&on_disk) else {
                return Ok(None);
            };
            if !meta.file_type().is_symlink() {
                return Ok(meta.is_file().then_some(on_disk));
            }
            let target = std::fs::read_link(&on_disk).map_err(io(&on_disk))?;
            let target = target.to_string_lossy();
            path = if let Some(absolute) = target.strip_prefix('/') {
                absolute.to_owned()
            } else {
                let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
                normalize(&format!("{dir}/{target}")).ok_or_else(|| InitramfsError::BadLink {
                    package: self.deb.name.clone(),
                    path: path.clone(),
                    why: format!("the link to `{target}` leaves the package"),
                })?
            };
        }
        Err(InitramfsError::BadLink {
            package: self.deb.name.clone(),
            path,
            why: format!("more than {MAX_SYMLINKS} links"),
        })
    }

    /// The library directory and file of `soname` in this package, if it ships it.
    pub fn find_library(&self, soname: &str) -> Result<Option<(String, PathBuf)>, InitramfsError> {
        for dir in LIBRARY_DIRS {
            if let Some(file) = self.resolve(&format!("{dir}/{soname}"))? {
                return Ok(Some((format!("{dir}/{soname}"), file)));
            }
        }
        Ok(None)
    }
}

/// `a/./b/../c` to `a/c`; `None` if `..` climbs above the root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Where packages come from: apt in [`build`], a fixed set in the tests.
pub trait PackageSource {
    /// Package `name`, fetched and unpacked on first use; `Ok(None)` if apt has no candidate
    /// (a virtual package).
    fn unpack(&mut self, name: &str) -> Result<Option<Unpacked>, InitramfsError>;
}

/// apt: the candidate version, fetched into `debs` and checked, unpacked under `unpack_dir`.
pub struct AptSource {
    pub debs: PathBuf,
    pub unpack_dir: PathBuf,
}

impl PackageSource for AptSource {
    fn unpack(&mut self, name: &str) -> Result<Option<Unpacked>, InitramfsError> {
        let (deb, record) = match resolve_candidate(name) {
            Ok(found) => found,
            Err(KernelError::NoCandidate(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (path, _) = fetch_deb(&deb, &self.debs)?;
        let root = self.unpack_dir.join(&deb.name);
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(io(&root))?;
        }
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let mut command = Command::new("dpkg-deb");
        command.arg("-x").arg(&path).arg(&root).stdin(Stdio::null());
        crate::linux_kernel::run(command, None)?;
        let mut depends = Vec::new();
        for field in ["Pre-Depends", "Depends"] {
            if let Some(value) = record_field(&record, field) {
                depends.extend(parse_depends(value));
            }
        }
        Ok(Some(Unpacked { deb, depends, root }))
    }
}

/// What an ELF needs: its `DT_NEEDED` sonames, in order, and its `PT_INTERP`, if any.
pub fn elf_needs(
    bytes: &[u8],
    path: &str,
) -> Result<(Vec<String>, Option<String>), InitramfsError> {
    let bad = |why: String| InitramfsError::Elf {
        path: path.to_owned(),
        why,
    };
    let file = ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|e| bad(format!("{e}")))?;
    let interp = match file.segments() {
        Some(segments) => segments
            .iter()
            .find(|p| p.p_type == PT_INTERP)
            .map(|p| {
                let data = file.segment_data(&p).map_err(|e| bad(format!("{e}")))?;
                let text = data.split(|&b| b == 0).next().unwrap_or_default();
                String::from_utf8(text.to_vec()).map_err(|_| bad("PT_INTERP is not UTF-8".into()))
            })
            .transpose()?,
        None => None,
    };
    let Some(dynamic) = file.dynamic().map_err(|e| bad(format!("{e}")))? else {
        return Ok((Vec::new(), interp));
    };
    let (shdrs, strtab) = file
        .section_headers_with_strtab()
        .map_err(|e| bad(format!("{e}")))?;
    let (Some(shdrs), Some(strtab)) = (shdrs, strtab) else {
        return Err(bad("no section headers to find .dynstr".into()));
    };
    let dynstr_header = shdrs
        .iter()
        .find(|s| strtab.get(s.sh_name as usize).ok() == Some(".dynstr"))
        .ok_or_else(|| bad("no .dynstr section".into()))?;
    let dynstr = file
        .section_data_as_strtab(&dynstr_header)
        .map_err(|e| bad(format!("{e}")))?;
    let mut needed = Vec::new();
    for entry in dynamic.iter().filter(|d| d.d_tag == DT_NEEDED) {
        let name = dynstr
            .get(entry.d_val() as usize)
            .map_err(|e| bad(format!("bad DT_NEEDED: {e}")))?;
        needed.push(name.to_owned());
    }
    Ok((needed, interp))
}

/// Every file of the closure: its path in the image and where its bytes are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Image path (relative) to (package, file on disk).
    pub files: BTreeMap<String, (String, PathBuf)>,
    /// Every package unpacked, in order.
    pub packages: Vec<DebPackage>,
}

struct Resolver<'s, S: PackageSource> {
    source: &'s mut S,
    /// Unpacked packages by name (`None`: virtual), and their order.
    unpacked: BTreeMap<String, Option<Unpacked>>,
    order: Vec<String>,
}

impl<S: PackageSource> Resolver<'_, S> {
    fn get(&mut self, name: &str) -> Result<Option<&Unpacked>, InitramfsError> {
        if !self.unpacked.contains_key(name) {
            let package = self.source.unpack(name)?;
            if package.is_some() {
                self.order.push(name.to_owned());
            }
            self.unpacked.insert(name.to_owned(), package);
        }
        Ok(self.unpacked[name].as_ref())
    }

    /// The package that ships `want` (a soname, or the loader's path), looked up first among
    /// the packages unpacked so far (in order), then among `package`'s dependencies.
    fn provider(
        &mut self,
        package: &str,
        want: &Wanted<'_>,
    ) -> Result<Option<(String, String, PathBuf)>, InitramfsError> {
        for name in self.order.clone() {
            let found = self.get(&name)?.expect("only real packages are in order");
            if let Some((path, file)) = want.find(found)? {
                return Ok(Some((name, path, file)));
            }
        }
        let depends = self
            .get(package)?
            .map(|p| p.depends.clone())
            .unwrap_or_default();
        for alternatives in depends {
            for name in alternatives {
                let Some(found) = self.get(&name)? else {
                    continue;
                };
                if let Some((path, file)) = want.find(found)? {
                    return Ok(Some((name, path, file)));
                }
            }
        }
        Ok(None)
    }
}

enum Wanted<'a> {
    Soname(&'a str),
    Path(&'a str),
}

impl Wanted<'_> {
    fn find(&self, package: &Unpacked) -> Result<Option<(String, PathBuf)>, InitramfsError> {
        match self {
            Wanted::Soname(soname) => package.find_library(soname),
            Wanted::Path(path) => Ok(package
                .resolve(path)?
                .map(|file| (path.trim_start_matches('/').to_owned(), file))),
        }
    }
}

/// The closure of `roots` ((package, path in it) of an ELF each), plus the `dlopened` sonames
/// of the given packages: each ELF's `DT_NEEDED` and `PT_INTERP`, transitively.
pub fn resolve_closure<S: PackageSource>(
    source: &mut S,
    roots: &[(&str, &str)],
    dlopened: &[(&str, &str)],
) -> Result<Closure, InitramfsError> {
    let mut resolver = Resolver {
        source,
        unpacked: BTreeMap::new(),
        order: Vec::new(),
    };
    let mut closure = Closure::default();
    // (package, image path, file on disk)
    let mut queue: VecDeque<(String, String, PathBuf)> = VecDeque::new();
    for &(package, path) in roots {
        let found = resolver
            .get(package)?
            .ok_or_else(|| KernelError::NoCandidate(package.to_owned()))?;
        let file = found
            .resolve(path)?
            .ok_or_else(|| InitramfsError::MissingFile {
                package: package.to_owned(),
                path: path.to_owned(),
                why: "a root of the initramfs".into(),
            })?;
        queue.push_back((package.to_owned(), path.to_owned(), file));
    }
    for &(package, soname) in dlopened {
        let found = resolver
            .get(package)?
            .ok_or_else(|| KernelError::NoCandidate(package.to_owned()))?;
        let (path, file) =
            found
                .find_library(soname)?
                .ok_or_else(|| InitramfsError::MissingFile {
                    package: package.to_owned(),
                    path: soname.to_owned(),
                    why: "a library loaded with dlopen".into(),
                })?;
        queue.push_back((package.to_owned(), path, file));
    }
    let mut provided: BTreeSet<String> = BTreeSet::new();
    while let Some((package, path, file)) = queue.pop_front() {
        if closure.files.contains_key(&path) {
            continue;
        }
        let bytes = std::fs::read(&file).map_err(io(&file))?;
        let (needed, interp) = elf_needs(&bytes, &path)?;
        closure
            .files
            .insert(path.clone(), (package.clone(), file.clone()));
        if let Some(soname) = path.rsplit('/').next() {
            provided.insert(soname.to_owned());
        }
        let wants = interp
            .iter()
            .map(|i| Wanted::Path(i))
            .chain(needed.iter().map(|s| Wanted::Soname(s)));
        for want in wants {
            let (key, label) = match &want {
                Wanted::Soname(s) => ((*s).to_owned(), (*s).to_owned()),
                Wanted::Path(p) => (p.trim_start_matches('/').to_owned(), (*p).to_owned()),
            };
            if provided.contains(&key) || closure.files.contains_key(&key) {
                continue;
            }
            let (provider, lib_path, lib_file) =
                resolver.provider(&package, &want)?.ok_or_else(|| {
                    let tried = resolver
                        .unpacked
                        .get(&package)
                        .and_then(|p| p.as_ref())
                        .map(|p| {
                            p.depends
                                .iter()
                                .map(|alts| alts.join(" | "))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    InitramfsError::UnresolvedLibrary {
                        soname: label.clone(),
                        needed_by: path.clone(),
                        package: package.clone(),
                        tried,
                    }
                })?;
            if matches!(want, Wanted::Soname(_)) {
                provided.insert(key);
            }
            queue.push_back((provider, lib_path, lib_file));
        }
    }
    closure.packages = resolver
        .order
        .iter()
        .filter_map(|name| resolver.unpacked[name].as_ref().map(|p| p.deb.clone()))
        .collect();
    Ok(closure)
}

/// The line `/init` prints when a role ends, offering a busybox shell on the console (inside
/// double quotes in the script: no `"`, `` ` ``, `$` or `\\`).
pub const SHELL_OFFER: &str =
    "slipway-init: shell? type 'shell' within 10 s for a busybox shell; anything else powers off";
/// How long `/init` waits for an answer to [`SHELL_OFFER`].
pub const SHELL_OFFER_SECONDS: u32 = 10;
/// The answer to [`SHELL_OFFER`] that keeps the domain up with a shell.
pub const SHELL_ANSWER: &str = "shell";

/// What the harness types after [`SHELL_OFFER`]: `shell` for `--interactive`, else a line that
/// powers off at once (rather than after the wait).
pub fn shell_offer_answer(interactive: bool) -> crate::runner::ConsoleInput {
    crate::runner::ConsoleInput {
        after_line_containing: SHELL_OFFER.to_owned(),
        bytes: if interactive {
            format!("{SHELL_ANSWER}\n").into_bytes()
        } else {
            b"poweroff\n".to_vec()
        },
    }
}

/// The `/init` script: `init.sh` with its `@NAME@` constants filled in from their definitions.
pub fn render_init() -> String {
    use slipway_guest_attest::{B64_CHUNK, MAX_NONCE, NONCE_PROMPT, PREFIX};
    let quote_pcrs: Vec<String> = slipway_tpm::PcrMask::QUOTE
        .iter()
        .map(|p| p.to_string())
        .collect();
    let library_path: Vec<String> = LIBRARY_DIRS.iter().map(|d| format!("/{d}")).collect();
    let values: [(&str, String); 14] = [
        ("SHELL_OFFER", SHELL_OFFER.to_owned()),
        ("SHELL_OFFER_SECONDS", SHELL_OFFER_SECONDS.to_string()),
        ("SHELL_ANSWER", SHELL_ANSWER.to_owned()),
        ("LIBRARY_PATH", library_path.join(":")),
        ("TCTI", TCTI.to_owned()),
        ("B64_CHUNK", B64_CHUNK.to_string()),
        // base64 prints 4 characters per 3 bytes.
        ("B64_COLUMNS", (B64_CHUNK / 3 * 4).to_string()),
        ("MAX_NONCE", MAX_NONCE.to_string()),
        (
            "FIRMWARE_LOG_GPA",
            slipway_protocol::v1::FIRMWARE_LOG_GPA.to_string(),
        ),
        (
            "LOG_WINDOW_CAPACITY",
            slipway_protocol::v1::LOG_WINDOW_CAPACITY.to_string(),
        ),
        ("PREFIX", PREFIX.to_owned()),
        ("QUOTE_PCRS", quote_pcrs.join(",")),
        (
            "AK_ATTRIBUTES",
            format!("{:#010x}", slipway_tpm::command::AK_ATTRIBUTES),
        ),
        ("INFO_PREFIX", INFO_PREFIX.to_owned()),
    ];
    let mut text = include_str!("linux_initramfs/init.sh").replace("@NONCE_PROMPT@", NONCE_PROMPT);
    for (name, value) in values {
        text = text.replace(&format!("@{name}@"), &value);
    }
    text
}

/// The image's tree from a closure: `/init`, busybox, tpm2 and its tool links, the libraries
/// and the loader, `/dev/console`, the package list.
pub fn image_tree(
    closure: &Closure,
    tpm2_links: &[String],
    busybox: &[u8],
) -> Result<Tree, InitramfsError> {
    let mut tree = Tree::default();
    tree.insert(
        "init",
        Node::File {
            mode: 0o755,
            bytes: render_init().into_bytes(),
        },
    )?;
    tree.insert(
        BUSYBOX.1,
        Node::File {
            mode: 0o755,
            bytes: busybox.to_vec(),
        },
    )?;
    tree.insert("bin/sh", Node::Symlink("busybox".into()))?;
    for dir in ["dev", "proc", "sys", "tmp", "root"] {
        tree.insert(dir, Node::Dir)?;
    }
    tree.insert(
        "dev/console",
        Node::CharDevice {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    for (path, (_, file)) in &closure.files {
        let bytes = std::fs::read(file).map_err(io(file))?;
        tree.insert(path, Node::File { mode: 0o755, bytes })?;
    }
    let tpm2_name = TPM2.1.rsplit('/').next().expect("a file name");
    for link in tpm2_links {
        tree.insert(
            &format!("usr/bin/{link}"),
            Node::Symlink(tpm2_name.to_owned()),
        )?;
    }
    tree.insert(
        PACKAGES_FILE,
        Node::File {
            mode: 0o644,
            bytes: packages_list(&closure.packages).into_bytes(),
        },
    )?;
    Ok(tree)
}

/// One line per package: `name version sha256`, sorted by name.
pub fn packages_list(packages: &[DebPackage]) -> String {
    let mut sorted = packages.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|p| format!("{} {} {}\n", p.name, p.version, p.sha256))
        .collect()
}

/// The `tpm2_*` links of tpm2-tools' `/usr/bin` (links to `tpm2`), sorted.
fn tpm2_links(package: &Unpacked) -> Result<Vec<String>, InitramfsError> {
    let dir = package.root.join("usr/bin");
    let mut links = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(target) = std::fs::read_link(entry.path())
            && target.as_os_str() == "tpm2"
        {
            links.push(name);
        }
    }
    links.sort();
    Ok(links)
}

/// What `linux-initramfs` produced.
#[derive(Debug, Clone)]
pub struct BuiltInitramfs {
    pub image: PathBuf,
    pub size: usize,
    pub sha256: String,
    /// Uncompressed cpio size.
    pub cpio_size: usize,
    pub files: usize,
    pub packages: Vec<DebPackage>,
}

/// The whole build: fetch, closure, tree, cpio, gzip; written to `out` (default: the cache).
pub fn build(cache: &Path, out: Option<&Path>) -> Result<BuiltInitramfs, InitramfsError> {
    // One build at a time per cache (parallel tests, a bundle build beside `linux-initramfs`):
    // they share the unpacked packages and the default output.
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let lock_path = cache.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let mut source = AptSource {
        debs: cache.join("debs"),
        unpack_dir: cache.join("unpacked"),
    };
    if source.unpack_dir.exists() {
        std::fs::remove_dir_all(&source.unpack_dir).map_err(io(&source.unpack_dir))?;
    }
    println!(
        "xtask: linux-initramfs: {} and their library closure (apt candidates, cached in {})",
        ROOT_PACKAGES.join(", "),
        source.debs.display()
    );
    let built = build_from(&mut source, cache, out);
    // The unpacked packages go, whether the build worked or not.
    let cleaned = std::fs::remove_dir_all(&source.unpack_dir);
    let built = built?;
    if let Err(e) = cleaned
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(io(&source.unpack_dir)(e));
    }
    Ok(built)
}

fn build_from(
    source: &mut AptSource,
    cache: &Path,
    out: Option<&Path>,
) -> Result<BuiltInitramfs, InitramfsError> {
    // Every root package first, so the closure sees them in a fixed order.
    let mut roots_unpacked = Vec::new();
    for name in ROOT_PACKAGES {
        roots_unpacked.push(
            source
                .unpack(name)?
                .ok_or_else(|| KernelError::NoCandidate(name.into()))?,
        );
    }
    let mut preloaded = Preloaded {
        inner: source,
        ready: roots_unpacked.clone(),
    };
    let closure = resolve_closure(&mut preloaded, &[TPM2], &DLOPENED)?;
    let by_name = |name: &str| {
        roots_unpacked
            .iter()
            .find(|p| p.deb.name == name)
            .expect("a root package")
    };
    let busybox_file =
        by_name(BUSYBOX.0)
            .resolve(BUSYBOX.1)?
            .ok_or_else(|| InitramfsError::MissingFile {
                package: BUSYBOX.0.into(),
                path: BUSYBOX.1.into(),
                why: "the shell and tools".into(),
            })?;
    let busybox = std::fs::read(&busybox_file).map_err(io(&busybox_file))?;
    let mut closure = closure;
    for root in &roots_unpacked {
        if !closure.packages.contains(&root.deb) {
            closure.packages.push(root.deb.clone());
        }
    }
    let tree = image_tree(&closure, &tpm2_links(by_name(TPM2.0))?, &busybox)?;
    let archive = cpio::write_newc(&tree);
    let image_bytes = cpio::gzip(&archive);
    let out = out.map_or_else(|| cache.to_path_buf(), Path::to_path_buf);
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let image = out.join(IMAGE_NAME);
    let tmp = image.with_extension("partial");
    if let Err(e) = std::fs::write(&tmp, &image_bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    std::fs::rename(&tmp, &image).map_err(io(&image))?;
    let list = out.join("initramfs.packages");
    std::fs::write(&list, packages_list(&closure.packages)).map_err(io(&list))?;
    Ok(BuiltInitramfs {
        image,
        size: image_bytes.len(),
        sha256: crate::linux_kernel::sha256_hex(&image_bytes),
        cpio_size: archive.len(),
        files: tree.iter().count(),
        packages: closure.packages,
    })
}

/// A source whose first packages are already unpacked.
struct Preloaded<'a, S: PackageSource> {
    inner: &'a mut S,
    ready: Vec<Unpacked>,
}

impl<S: PackageSource> PackageSource for Preloaded<'_, S> {
    fn unpack(&mut self, name: &str) -> Result<Option<Unpacked>, InitramfsError> {
        match self.ready.iter().find(|p| p.deb.name == name) {
            Some(p) => Ok(Some(p.clone())),
            None => self.inner.unpack(name),
        }
    }
}

/// The cache directory under the workspace's target directory.
pub fn cache_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("linux-initramfs")
}

/// `cargo xtask linux-initramfs`.
pub fn linux_initramfs_command(ws: &Workspace, args: &LinuxInitramfsArgs) -> ExitCode {
    match build(&cache_dir(ws), args.out.as_deref()) {
        Ok(built) => {
            println!("{}", describe(&built));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask linux-initramfs: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The summary `linux-initramfs` and bundle builds print.
pub fn describe(built: &BuiltInitramfs) -> String {
    let mut out = format!(
        "  initramfs {}  {} bytes (cpio {} bytes, {} entries)  sha256 {}\n  from {} packages:",
        built.image.display(),
        built.size,
        built.cpio_size,
        built.files,
        built.sha256,
        built.packages.len()
    );
    for line in packages_list(&built.packages).lines() {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests;
