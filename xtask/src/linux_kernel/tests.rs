use super::*;

const POLICY: &str = "\
linux-image-amd64:
  Installed: (none)
  Candidate: 6.1.192-3
  Version table:
     6.1.192-3 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
";

const META_SHOW: &str = "\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)
Description: Linux for 64-bit PCs (meta-package)

Package: linux-image-amd64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)
";

#[test]
fn apt_output_gives_the_candidate_and_the_exact_kernel_dependency() {
    assert_eq!(parse_candidate(POLICY).as_deref(), Some("6.1.192-3"));
    assert_eq!(parse_candidate("x:\n  Candidate: (none)\n"), None);
    assert_eq!(parse_candidate(""), None);
    assert_eq!(
        parse_kernel_dependency(META_SHOW),
        Some(("linux-image-6.1.0-57-amd64".into(), "6.1.192-3".into())),
        "the first record only"
    );
    assert_eq!(
        parse_kernel_dependency(
            "Package: m\nDepends: libc6 (>= 2), linux-image-6.1.0-9-amd64 (= 6.1.27-1), x\n"
        ),
        Some(("linux-image-6.1.0-9-amd64".into(), "6.1.27-1".into()))
    );
    assert_eq!(
        parse_kernel_dependency("Depends: linux-image-6.1.0-9-amd64 (>= 6.1)\n"),
        None,
        "only an exact version pins the kernel"
    );
    assert_eq!(
        record_field("Package: p\nSHA256: AbC\nSize: 3\n", "SHA256"),
        Some("AbC")
    );
    assert_eq!(record_field("Package: p\nMD5sum: x\n", "SHA256"), None);
    assert_eq!(
        record_field("Package: p\nSHA2560: no\n", "SHA256"),
        None,
        "whole field names only"
    );
}

#[test]
fn an_epoch_is_escaped_in_the_file_name_as_apt_does() {
    let package = KernelPackage {
        name: "linux-image-6.1.0-57-amd64".into(),
        version: "1:6.1.192-3".into(),
        meta_version: "6.1.192-3".into(),
        sha256: String::new(),
        release: "6.1.0-57-amd64".into(),
    };
    assert_eq!(
        package.deb_file_name(),
        "linux-image-6.1.0-57-amd64_1%3a6.1.192-3_amd64.deb"
    );
}

/// `bytes` compressed by the `xz` tool (as the kernel build's `xz_wrap.sh` does, minus its
/// filters), followed by the 4-byte size the kernel build appends.
fn xz_payload(bytes: &[u8], appended_size: u32) -> Vec<u8> {
    let mut command = Command::new("xz");
    command.args(["--compress", "--stdout", "--check=crc32"]);
    let mut payload = run(command, Some(bytes)).expect("xz runs (xz-utils)");
    payload.extend_from_slice(&appended_size.to_le_bytes());
    payload
}

/// A bzImage-shaped file: `setup_sects`, the header signature and protocol, the payload at
/// `payload_offset` after the protected-mode start, and trailing bytes after it.
fn bzimage(setup_sects: u8, protocol: u16, payload_offset: u32, payload: &[u8]) -> Vec<u8> {
    let sects = if setup_sects == 0 {
        4
    } else {
        usize::from(setup_sects)
    };
    let start = (sects + 1) * 512 + payload_offset as usize;
    let mut image = vec![0x90u8; start + payload.len() + 100];
    image[0x1F1] = setup_sects;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
    image[0x248..0x24C].copy_from_slice(&payload_offset.to_le_bytes());
    image[0x24C..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    image[start..start + payload.len()].copy_from_slice(payload);
    image
}

#[test]
fn the_payload_is_found_through_the_setup_header_and_decompresses_exactly() {
    let kernel: Vec<u8> = (0..100_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let payload = xz_payload(&kernel, kernel.len() as u32);
    for setup_sects in [0u8, 27] {
        let image = bzimage(setup_sects, 0x020F, 0x3A5, &payload);
        let found = bzimage_payload(&image).unwrap();
        let sects = if setup_sects == 0 { 4 } else { 27 };
        assert_eq!(found.offset, (sects + 1) * 512 + 0x3A5);
        assert_eq!(found.length, payload.len());
        assert_eq!(found.uncompressed_size as usize, kernel.len());
        assert_eq!(decompress_payload(&image, &found).unwrap(), kernel);
    }
}

#[test]
fn a_wrong_appended_size_is_refused() {
    let kernel = vec![7u8; 5000];
    let image = bzimage(4, 0x020F, 0, &xz_payload(&kernel, 4999));
    let found = bzimage_payload(&image).unwrap();
    let error = decompress_payload(&image, &found).unwrap_err().to_string();
    assert!(error.contains("5000") && error.contains("4999"), "{error}");
}

#[test]
fn images_that_are_not_xz_bzimages_are_refused_by_cause() {
    let payload = xz_payload(b"kernel", 6);
    let refused = |image: &[u8], words: &str| {
        let error = bzimage_payload(image).unwrap_err().to_string();
        assert!(error.contains(words), "`{error}` lacks `{words}`");
    };
    refused(&[], "HdrS");
    refused(&vec![0u8; 0x300], "HdrS");
    refused(&bzimage(4, 0x0207, 0, &payload), "2.07");
    let mut outside = bzimage(4, 0x020F, 0, &payload);
    outside[0x24C..0x250].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    refused(&outside, "outside");
    let mut huge_offset = bzimage(4, 0x020F, 0, &payload);
    huge_offset[0x248..0x24C].copy_from_slice(&u32::MAX.to_le_bytes());
    refused(&huge_offset, "outside");
    let mut gzip = payload.clone();
    gzip[..2].copy_from_slice(&[0x1F, 0x8B]);
    refused(&bzimage(4, 0x020F, 0, &gzip), "not XZ");
    refused(&bzimage(4, 0x020F, 0, &XZ_MAGIC[..]), "too short");
    let mut truncated_header = bzimage(4, 0x020F, 0, &payload);
    truncated_header.truncate(0x24A);
    refused(&truncated_header, "truncated");
}

/// A minimal ELF64 x86-64 file: one PT_LOAD at 16 MiB and one PT_NOTE holding `notes`.
fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
    let phoff = 64usize;
    let data = phoff + 2 * 56;
    let load = [0xCCu8; 32];
    let mut f = vec![0u8; data];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&2u16.to_le_bytes());
    let phdr = |f: &mut Vec<u8>, i: usize, kind: u32, offset: usize, len: usize, paddr: u64| {
        let p = phoff + i * 56;
        f[p..p + 4].copy_from_slice(&kind.to_le_bytes());
        f[p + 8..p + 16].copy_from_slice(&(offset as u64).to_le_bytes());
        f[p + 16..p + 24].copy_from_slice(&paddr.to_le_bytes());
        f[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
        f[p + 32..p + 40].copy_from_slice(&(len as u64).to_le_bytes());
        f[p + 40..p + 48].copy_from_slice(&(len as u64).to_le_bytes());
        f[p + 48..p + 56].copy_from_slice(&4u64.to_le_bytes());
    };
    phdr(&mut f, 0, 1, data, load.len(), 0x100_0000);
    phdr(&mut f, 1, PT_NOTE, data + load.len(), notes.len(), 0);
    f.extend_from_slice(&load);
    f.extend_from_slice(notes);
    f
}

/// One ELF note: name, type and descriptor, each padded to 4 bytes.
fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&kind.to_le_bytes());
    n.extend_from_slice(name);
    n.push(0);
    while n.len() % 4 != 0 {
        n.push(0);
    }
    n.extend_from_slice(desc);
    while n.len() % 4 != 0 {
        n.push(0);
    }
    n
}

#[test]
fn the_pvh_note_must_be_there_with_an_eight_byte_descriptor() {
    let entry = 0x0100_0000_u64 + 0x10;
    let other = note(b"GNU", 3, &[1, 2, 3, 4]);
    let good = [other.clone(), note(b"Xen", 18, &entry.to_le_bytes())].concat();
    assert_eq!(pvh_entry_note(&elf_with_notes(&good)).unwrap(), entry);
    // hv-core's loader accepts the same file.
    let plan = slipway_hv_core::pvh::plan(&elf_with_notes(&good), PLAN_RAM_LIMIT).unwrap();
    assert_eq!(u64::from(plan.entry), entry);

    let refused = |notes: &[u8], words: &str| {
        let error = pvh_entry_note(&elf_with_notes(notes))
            .unwrap_err()
            .to_string();
        assert!(error.contains(words), "`{error}` lacks `{words}`");
    };
    refused(&note(b"Xen", 18, &[0, 0, 0, 1]), "4-byte descriptor");
    refused(&other, "no PVH entry note");
    refused(&note(b"Xen", 17, &entry.to_le_bytes()), "no PVH entry note");
    refused(
        &note(b"Linux", 18, &entry.to_le_bytes()),
        "no PVH entry note",
    );
    let error = pvh_entry_note(b"MZ not an elf").unwrap_err().to_string();
    assert!(error.contains("not an ELF"), "{error}");
}

/// The real thing, through apt (network on first use; the package stays cached in the
/// workspace's target directory): the stock kernel unpacks to a PVH vmlinux loaded at 16 MiB.
#[test]
fn debians_stock_kernel_unpacks_to_a_pvh_vmlinux() {
    let ws = Workspace::locate().expect("workspace");
    let out = std::env::temp_dir().join(format!("slipway-linux-kernel-{}", std::process::id()));
    let fetched = fetch(&cache_dir(&ws), Some(&out)).expect("the kernel is fetched");
    assert!(
        fetched.package.name.starts_with("linux-image-6.1."),
        "{:?}",
        fetched.package
    );
    let deb = std::fs::read(&fetched.deb).unwrap();
    assert_eq!(sha256_hex(&deb), fetched.package.sha256);
    let vmlinux = std::fs::read(&fetched.vmlinux).unwrap();
    assert_eq!(vmlinux.len(), fetched.vmlinux_len);
    assert_eq!(sha256_hex(&vmlinux), fetched.vmlinux_sha256);
    assert_eq!(fetched.load_span.0, 16 << 20, "loads from 16 MiB");
    assert!(
        fetched.load_span.1 < 128 << 20,
        "{:#x}",
        fetched.load_span.1
    );
    assert!((fetched.load_span.0..fetched.load_span.1).contains(&fetched.pvh_entry));
    // A second run takes the cached package and gives the same bytes.
    let again = fetch(&cache_dir(&ws), Some(&out)).unwrap();
    assert_eq!(again.vmlinux_sha256, fetched.vmlinux_sha256);
    let _ = std::fs::remove_dir_all(&out);
}
