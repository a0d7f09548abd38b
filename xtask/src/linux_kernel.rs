//! `cargo xtask linux-kernel [--out DIR]`: Debian bookworm's stock kernel, unmodified, as the
//! `vmlinux` a PVH domain boots (docs/linux-kernel.md gives the same steps for a fleet).
//!
//! 1. The kernel package is the exact dependency of the `linux-image-amd64` metapackage's
//!    candidate version (`apt-cache policy`, `apt-cache show linux-image-amd64=V`:
//!    `Depends: linux-image-6.1.0-N-amd64 (= V')`).
//! 2. `apt-get download NAME=V'` into `<target>/linux-kernel/` (kept across runs); the `.deb`'s
//!    SHA-256 must equal the `SHA256` field apt's signed metadata gives for that exact version
//!    (`apt-cache show NAME=V'`), whether it was just downloaded or cached.
//! 3. `dpkg-deb --fsys-tarfile` piped to `tar -xO ./boot/vmlinuz-<release>`: no root, nothing
//!    installed.
//! 4. The bzImage's own setup header says where its compressed payload is (`payload_offset`,
//!    `payload_length`, boot protocol 2.08+, relative to the protected-mode code at
//!    `(setup_sects + 1) * 512`); it must start with the XZ magic and end with the 4-byte
//!    little-endian uncompressed size the kernel build appends.
//! 5. `xz --decompress --stdout --single-stream` of exactly that payload gives `vmlinux` (XZ
//!    decoding is deterministic: the bytes are the kernel build's own `vmlinux.bin`), whose
//!    length must equal the appended size.
//! 6. The ELF must carry the PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`, type 18, name "Xen")
//!    with an 8-byte descriptor, and hv-core's PVH load plan must accept it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use elf::ElfBytes;
use elf::abi::PT_NOTE;
use elf::endian::LittleEndian;
use elf::note::Note;
use slipway_hv_core::pvh::PHYS32_ENTRY_NOTE;
use slipway_measure::HashAlg;
use slipway_measure::hash::hash;

use crate::workspace::Workspace;

/// The metapackage that names the current stock kernel.
pub const META_PACKAGE: &str = "linux-image-amd64";
/// Prefix of the kernel package's name; the rest is the kernel release.
const KERNEL_PACKAGE_PREFIX: &str = "linux-image-";
/// The XZ stream magic (XZ file format 1.0.4, 2.1.1.1).
pub const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// Lowest guest RAM the stock kernel's segments (physical 16-74 MiB) are planned against.
const PLAN_RAM_LIMIT: u64 = 1 << 30;

/// Options of `cargo xtask linux-kernel`.
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args)]
pub struct LinuxKernelArgs {
    /// Where `vmlinuz` and `vmlinux` go [default: <target>/linux-kernel/<release>/]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Why the kernel could not be fetched or is not what a PVH domain needs.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("`{command}` could not run: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("apt knows no candidate version of {0} (run `apt-get update` first)")]
    NoCandidate(String),
    #[error("{package} {version} depends on no exact `linux-image-*` version")]
    NoKernelDependency { package: String, version: String },
    #[error("apt's record of {package} {version} has no `{field}` field")]
    MissingField {
        package: String,
        version: String,
        field: &'static str,
    },
    #[error("{path}: SHA-256 {actual} differs from apt's {expected}")]
    DigestMismatch {
        path: PathBuf,
        actual: String,
        expected: String,
    },
    #[error("apt-get download left no {0}")]
    NotDownloaded(PathBuf),
    #[error("vmlinuz: {0}")]
    BzImage(String),
    #[error("vmlinux: {0}")]
    Vmlinux(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `command` (stdin fed from `input` if given, else as the caller set it up, by default
/// inherited), returns its stdout; a non-zero exit is an error naming the command and its stderr.
pub(crate) fn run(mut command: Command, input: Option<&[u8]>) -> Result<Vec<u8>, KernelError> {
    let name = format!("{command:?}").replace('"', "");
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| KernelError::Spawn {
        command: name.clone(),
        source,
    })?;
    // Feed stdin from a thread so a large output cannot deadlock against a full input pipe.
    let feeder = input.map(|bytes| {
        let mut stdin = child.stdin.take().expect("stdin piped");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || stdin.write_all(&bytes))
    });
    let output = child
        .wait_with_output()
        .map_err(|source| KernelError::Spawn {
            command: name.clone(),
            source,
        })?;
    if let Some(feeder) = feeder {
        // A child that exits early closes the pipe; its exit status then tells.
        let _ = feeder.join();
    }
    if !output.status.success() {
        return Err(KernelError::Failed {
            command: name,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output.stdout)
}

pub(crate) fn apt_cache(args: &[&str]) -> Result<String, KernelError> {
    let mut command = Command::new("apt-cache");
    command.args(args).stdin(Stdio::null());
    run(command, None).map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// The `Candidate:` version in `apt-cache policy PACKAGE` output.
pub fn parse_candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_string)
}

/// A field of the first record in `apt-cache show` output (single-line fields only).
pub fn record_field<'a>(show: &'a str, field: &str) -> Option<&'a str> {
    show.lines()
        .take_while(|line| !line.trim().is_empty())
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// The exact `linux-image-*` dependency `(name, version)` of the metapackage's record.
pub fn parse_kernel_dependency(show: &str) -> Option<(String, String)> {
    record_field(show, "Depends")?.split(',').find_map(|dep| {
        let (name, rest) = dep.trim().split_once(' ')?;
        let version = rest.trim().strip_prefix("(=")?.strip_suffix(')')?.trim();
        (name.starts_with(KERNEL_PACKAGE_PREFIX) && !version.is_empty())
            .then(|| (name.to_string(), version.to_string()))
    })
}

/// The kernel package as apt's metadata names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackage {
    pub name: String,
    pub version: String,
    /// The metapackage version that chose it.
    pub meta_version: String,
    /// SHA-256 of the `.deb` (lower-case hex), from apt's metadata.
    pub sha256: String,
    /// The kernel release (`6.1.0-N-amd64`): the package name without `linux-image-`.
    pub release: String,
}

impl KernelPackage {
    /// The file name `apt-get download` gives the package (an epoch's `:` becomes `%3a`).
    pub fn deb_file_name(&self) -> String {
        self.deb().deb_file_name()
    }

    /// The `.deb` to fetch.
    pub fn deb(&self) -> DebPackage {
        DebPackage {
            name: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// One exact version of a Debian package, as apt's (signed) metadata describes it: what
/// [`fetch_deb`] downloads and checks. The kernel and the initramfs's packages
/// (`linux_initramfs`) are all fetched through it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    /// SHA-256 of the `.deb` (lower-case hex), from apt's metadata.
    pub sha256: String,
}

impl DebPackage {
    /// The file name `apt-get download` gives the package (an epoch's `:` becomes `%3a`).
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_amd64.deb",
            self.name,
            self.version.replace(':', "%3a")
        )
    }
}

/// apt's candidate version of `name` and its record (`apt-cache show NAME=VERSION`, first
/// record): the package to fetch, and the record for its other fields (`Depends`).
pub fn resolve_candidate(name: &str) -> Result<(DebPackage, String), KernelError> {
    let version = parse_candidate(&apt_cache(&["policy", name])?)
        .ok_or_else(|| KernelError::NoCandidate(name.into()))?;
    let record = apt_cache(&["show", &format!("{name}={version}")])?;
    let sha256 = record_field(&record, "SHA256")
        .ok_or_else(|| KernelError::MissingField {
            package: name.into(),
            version: version.clone(),
            field: "SHA256",
        })?
        .to_ascii_lowercase();
    Ok((
        DebPackage {
            name: name.into(),
            version,
            sha256,
        },
        record,
    ))
}

/// Asks apt which kernel package the metapackage's candidate names, and its SHA-256.
pub fn resolve_package() -> Result<KernelPackage, KernelError> {
    let meta_version = parse_candidate(&apt_cache(&["policy", META_PACKAGE])?)
        .ok_or_else(|| KernelError::NoCandidate(META_PACKAGE.into()))?;
    let meta = apt_cache(&["show", &format!("{META_PACKAGE}={meta_version}")])?;
    let (name, version) =
        parse_kernel_dependency(&meta).ok_or_else(|| KernelError::NoKernelDependency {
            package: META_PACKAGE.into(),
            version: meta_version.clone(),
        })?;
    let record = apt_cache(&["show", &format!("{name}={version}")])?;
    let sha256 = record_field(&record, "SHA256")
        .ok_or_else(|| KernelError::MissingField {
            package: name.clone(),
            version: version.clone(),
            field: "SHA256",
        })?
        .to_ascii_lowercase();
    let release = name
        .strip_prefix(KERNEL_PACKAGE_PREFIX)
        .unwrap_or(&name)
        .to_string();
    Ok(KernelPackage {
        name,
        version,
        meta_version,
        sha256,
        release,
    })
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hash(HashAlg::Sha256, bytes)
        .to_string()
        .to_ascii_lowercase()
}

/// The package's `.deb` in `cache`: reused if its SHA-256 matches apt's, else downloaded and
/// checked. Returns its path and bytes.
pub fn fetch_deb(package: &DebPackage, cache: &Path) -> Result<(PathBuf, Vec<u8>), KernelError> {
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let path = cache.join(package.deb_file_name());
    if let Ok(bytes) = std::fs::read(&path) {
        if sha256_hex(&bytes) == package.sha256 {
            return Ok((path, bytes));
        }
        // A partial or stale file: fetch it again.
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    println!(
        "xtask: downloading {} {} (apt-get download)",
        package.name, package.version
    );
    let mut command = Command::new("apt-get");
    command
        .args(["download", "-q"])
        .arg(format!("{}={}", package.name, package.version))
        .current_dir(cache)
        .stdin(Stdio::null());
    run(command, None)?;
    let bytes = std::fs::read(&path).map_err(|_| KernelError::NotDownloaded(path.clone()))?;
    let actual = sha256_hex(&bytes);
    if actual != package.sha256 {
        let _ = std::fs::remove_file(&path);
        return Err(KernelError::DigestMismatch {
            path,
            actual,
            expected: package.sha256.clone(),
        });
    }
    Ok((path, bytes))
}

/// `./boot/vmlinuz-<release>` from the `.deb`, without installing it: `dpkg-deb --fsys-tarfile`
/// piped straight into `tar -xO` (the data tarball holds every module, some 400 MB, so it is
/// streamed rather than held).
pub fn extract_vmlinuz(deb: &Path, release: &str) -> Result<Vec<u8>, KernelError> {
    let dpkg_name = format!("dpkg-deb --fsys-tarfile {}", deb.display());
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| KernelError::Spawn {
            command: dpkg_name.clone(),
            source,
        })?;
    let tarball = dpkg.stdout.take().expect("stdout piped");
    let mut tar = Command::new("tar");
    tar.args(["-xOf", "-", &format!("./boot/vmlinuz-{release}")])
        .stdin(tarball);
    let vmlinuz = run(tar, None);
    let dpkg_output = dpkg
        .wait_with_output()
        .map_err(|source| KernelError::Spawn {
            command: dpkg_name.clone(),
            source,
        })?;
    // A tar failure (say, no such member) also breaks dpkg-deb's pipe: tar's error names the
    // cause, so it comes first.
    let vmlinuz = vmlinuz?;
    if !dpkg_output.status.success() {
        return Err(KernelError::Failed {
            command: dpkg_name,
            status: dpkg_output.status.to_string(),
            stderr: String::from_utf8_lossy(&dpkg_output.stderr)
                .trim()
                .to_string(),
        });
    }
    Ok(vmlinuz)
}

/// Where a bzImage's compressed payload is, from its setup header (Linux boot protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BzPayload {
    /// Offset of the payload in the bzImage file.
    pub offset: usize,
    /// Its length (the XZ stream plus the 4-byte size the kernel build appends).
    pub length: usize,
    /// The uncompressed size the build appended.
    pub uncompressed_size: u32,
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Finds the XZ payload of a bzImage through its setup header: `HdrS` at 0x202, protocol
/// 2.08 or later at 0x206 (the first with `payload_offset`/`payload_length` at 0x248/0x24C),
/// the protected-mode code at `(setup_sects + 1) * 512` (setup_sects at 0x1F1, 0 meaning 4);
/// the payload must lie inside the file, start with the XZ magic and end with the appended
/// uncompressed size.
pub fn bzimage_payload(image: &[u8]) -> Result<BzPayload, KernelError> {
    let bad = |why: &str| KernelError::BzImage(why.to_string());
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad(
            "no `HdrS` setup header signature at 0x202: not a bzImage",
        ));
    }
    let protocol = u16::from_le_bytes([image[0x206], image[0x207]]);
    if protocol < 0x0208 {
        return Err(bad(&format!(
            "boot protocol {}.{:02} has no payload fields (2.08 needed)",
            protocol >> 8,
            protocol & 0xFF
        )));
    }
    let setup_sects = match image.get(0x1F1) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return Err(bad("truncated setup header")),
    };
    let (Some(payload_offset), Some(payload_length)) = (le_u32(image, 0x248), le_u32(image, 0x24C))
    else {
        return Err(bad("truncated setup header"));
    };
    let offset = (setup_sects + 1) * 512 + payload_offset as usize;
    let length = payload_length as usize;
    let payload = offset
        .checked_add(length)
        .and_then(|end| image.get(offset..end))
        .ok_or_else(|| {
            bad(&format!(
                "payload {offset:#x}+{length:#x} lies outside the {:#x}-byte file",
                image.len()
            ))
        })?;
    if !payload.starts_with(&XZ_MAGIC) {
        return Err(bad(&format!(
            "the payload at {offset:#x} is not XZ (this kernel was built with another compressor)"
        )));
    }
    let uncompressed_size = le_u32(payload, length - 4)
        .filter(|_| length >= XZ_MAGIC.len() + 4)
        .ok_or_else(|| bad("the payload is too short for an XZ stream and its size"))?;
    Ok(BzPayload {
        offset,
        length,
        uncompressed_size,
    })
}

/// `xz --decompress --stdout --single-stream` of the payload (the appended size after the
/// stream is not XZ data, hence single-stream); the result must have the appended size.
pub fn decompress_payload(image: &[u8], payload: &BzPayload) -> Result<Vec<u8>, KernelError> {
    let mut xz = Command::new("xz");
    xz.args(["--decompress", "--stdout", "--single-stream"]);
    let vmlinux = run(
        xz,
        Some(&image[payload.offset..payload.offset + payload.length]),
    )?;
    if vmlinux.len() != payload.uncompressed_size as usize {
        return Err(KernelError::BzImage(format!(
            "the payload decompresses to {} bytes, the build recorded {}",
            vmlinux.len(),
            payload.uncompressed_size
        )));
    }
    Ok(vmlinux)
}

/// The PVH entry of a `vmlinux`: the `XEN_ELFNOTE_PHYS32_ENTRY` note (name "Xen", type 18)
/// found in its `PT_NOTE` segments by the `elf` crate, which must have an 8-byte descriptor as
/// Debian's kernel does.
pub fn pvh_entry_note(vmlinux: &[u8]) -> Result<u64, KernelError> {
    let bad = |why: String| KernelError::Vmlinux(why);
    let file = ElfBytes::<LittleEndian>::minimal_parse(vmlinux)
        .map_err(|e| bad(format!("not an ELF: {e}")))?;
    let segments = file
        .segments()
        .ok_or_else(|| bad("no program headers".into()))?;
    for phdr in segments.iter().filter(|p| p.p_type == PT_NOTE) {
        let notes = file
            .segment_data_as_notes(&phdr)
            .map_err(|e| bad(format!("bad note segment: {e}")))?;
        for note in notes {
            let Note::Unknown(any) = note else { continue };
            if any.n_type != PHYS32_ENTRY_NOTE
                || any.name.strip_suffix(b"\0").unwrap_or(any.name) != b"Xen"
            {
                continue;
            }
            let desc: [u8; 8] = any.desc.try_into().map_err(|_| {
                bad(format!(
                    "the PVH entry note has a {}-byte descriptor, not 8",
                    any.desc.len()
                ))
            })?;
            return Ok(u64::from_le_bytes(desc));
        }
    }
    Err(bad(
        "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18): this kernel cannot boot as PVH"
            .into(),
    ))
}

/// What `linux-kernel` produced.
#[derive(Debug, Clone)]
pub struct FetchedKernel {
    pub package: KernelPackage,
    pub deb: PathBuf,
    pub deb_len: usize,
    pub vmlinuz: PathBuf,
    pub vmlinuz_len: usize,
    pub vmlinuz_sha256: String,
    pub payload: BzPayload,
    pub vmlinux: PathBuf,
    pub vmlinux_len: usize,
    pub vmlinux_sha256: String,
    pub pvh_entry: u64,
    /// Lowest and end guest-physical address of the loadable segments.
    pub load_span: (u64, u64),
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The whole fetch: resolve, download (or reuse) and check, extract, decompress, check the ELF.
pub fn fetch(cache: &Path, out: Option<&Path>) -> Result<FetchedKernel, KernelError> {
    let package = resolve_package()?;
    let (deb, deb_bytes) = fetch_deb(&package.deb(), cache)?;
    let vmlinuz_bytes = extract_vmlinuz(&deb, &package.release)?;
    let payload = bzimage_payload(&vmlinuz_bytes)?;
    let vmlinux_bytes = decompress_payload(&vmlinuz_bytes, &payload)?;
    let pvh_entry = pvh_entry_note(&vmlinux_bytes)?;
    let plan = slipway_hv_core::pvh::plan(&vmlinux_bytes, PLAN_RAM_LIMIT)
        .map_err(|e| KernelError::Vmlinux(format!("hv-core's PVH load plan refuses it: {e}")))?;
    let load_span = (
        plan.segments.iter().map(|s| s.gpa).min().unwrap_or(0),
        plan.segments
            .iter()
            .map(|s| s.gpa + s.mem_len)
            .max()
            .unwrap_or(0),
    );
    let out = out.map_or_else(|| cache.join(&package.release), Path::to_path_buf);
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let vmlinuz = out.join("vmlinuz");
    let vmlinux = out.join("vmlinux");
    write_file(&vmlinuz, &vmlinuz_bytes)?;
    write_file(&vmlinux, &vmlinux_bytes)?;
    Ok(FetchedKernel {
        deb,
        deb_len: deb_bytes.len(),
        vmlinuz,
        vmlinuz_len: vmlinuz_bytes.len(),
        vmlinuz_sha256: sha256_hex(&vmlinuz_bytes),
        payload,
        vmlinux,
        vmlinux_len: vmlinux_bytes.len(),
        vmlinux_sha256: sha256_hex(&vmlinux_bytes),
        pvh_entry,
        load_span,
        package,
    })
}

/// The cache directory under the workspace's target directory.
pub fn cache_dir(ws: &Workspace) -> PathBuf {
    ws.target_dir.join("linux-kernel")
}

/// `cargo xtask linux-kernel`.
pub fn linux_kernel_command(ws: &Workspace, args: &LinuxKernelArgs) -> ExitCode {
    match fetch(&cache_dir(ws), args.out.as_deref()) {
        Ok(k) => {
            let p = &k.package;
            println!(
                "{META_PACKAGE} {} -> {} {} (kernel {})",
                p.meta_version, p.name, p.version, p.release
            );
            println!(
                "  package  {}  {} bytes  sha256 {} (apt's)",
                k.deb.display(),
                k.deb_len,
                p.sha256
            );
            println!(
                "  vmlinuz  {}  {} bytes  sha256 {}",
                k.vmlinuz.display(),
                k.vmlinuz_len,
                k.vmlinuz_sha256
            );
            println!(
                "  payload  XZ at {:#x}, {} bytes, {} uncompressed",
                k.payload.offset, k.payload.length, k.payload.uncompressed_size
            );
            println!(
                "  vmlinux  {}  {} bytes  sha256 {}",
                k.vmlinux.display(),
                k.vmlinux_len,
                k.vmlinux_sha256
            );
            println!(
                "  PVH entry {:#x} (8-byte note), loads at {:#x}-{:#x} ({}-{} MiB)",
                k.pvh_entry,
                k.load_span.0,
                k.load_span.1,
                k.load_span.0 >> 20,
                k.load_span.1.div_ceil(1 << 20)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask linux-kernel: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
