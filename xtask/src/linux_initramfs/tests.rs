use super::cpio::{Node, Tree, TreeError, gzip, write_newc};
use super::*;

/// The attest role's transcript (its `attest: ` lines) from the documented dev loop: the stock
/// kernel (`vmlinuz`) and this initramfs under plain QEMU 7.2 with OVMF and swtpm (banks SHA-1
/// and SHA-256), nonce `8899aabbccddeeff0011223344556677`. The log is OVMF's, so PCR17-21 are
/// all FF (no dynamic launch).
const QEMU_TRANSCRIPT: &str = include_str!("qemu-ovmf-transcript.txt");
const QEMU_NONCE: &str = "8899aabbccddeeff0011223344556677";

fn tree(entries: &[(&str, Node)]) -> Tree {
    let mut tree = Tree::default();
    for (path, node) in entries {
        tree.insert(path, node.clone()).unwrap();
    }
    tree
}

fn file(bytes: &[u8]) -> Node {
    Node::File {
        mode: 0o755,
        bytes: bytes.to_vec(),
    }
}

/// One entry as [`read_newc`] reads it: (name, mode, uid, gid, mtime, rdev, data).
type Entry = (String, u32, u32, u32, u32, (u32, u32), Vec<u8>);

/// An independent reading of a newc archive.
fn read_newc(mut archive: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let total = archive.len();
    loop {
        assert_eq!(&archive[..6], b"070701");
        let field = |i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&archive[6 + 8 * i..14 + 8 * i]).unwrap(),
                16,
            )
            .unwrap()
        };
        let (mode, uid, gid, mtime, size) = (field(1), field(2), field(3), field(5), field(6));
        let rdev = (field(9), field(10));
        let namesize = field(11) as usize;
        let name = std::str::from_utf8(&archive[110..110 + namesize - 1])
            .unwrap()
            .to_owned();
        assert_eq!(archive[110 + namesize - 1], 0);
        let data_at = (110 + namesize).next_multiple_of(4);
        let data = archive[data_at..data_at + size as usize].to_vec();
        let next = (data_at + size as usize).next_multiple_of(4);
        archive = &archive[next..];
        if name == cpio::TRAILER {
            assert!(archive.is_empty(), "nothing after the trailer");
            assert!(total.is_multiple_of(4));
            return out;
        }
        out.push((name, mode, uid, gid, mtime, rdev, data));
    }
}

#[test]
fn the_cpio_lists_parents_first_in_path_order_with_owner_0_and_mtime_0() {
    let t = tree(&[
        ("usr/bin/tpm2_quote", Node::Symlink("tpm2".into())),
        ("init", file(b"#!/bin/sh\n")),
        ("usr/bin/tpm2", file(b"ELF")),
        (
            "dev/console",
            Node::CharDevice {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        ),
    ]);
    let entries = read_newc(&write_newc(&t));
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "dev",
            "dev/console",
            "init",
            "usr",
            "usr/bin",
            "usr/bin/tpm2",
            "usr/bin/tpm2_quote"
        ]
    );
    for (name, _, uid, gid, mtime, _, _) in &entries {
        assert_eq!((*uid, *gid, *mtime), (0, 0, 0), "{name}");
    }
    assert_eq!(entries[0].1, 0o040_755);
    assert_eq!(entries[1].1, 0o020_600);
    assert_eq!(entries[1].5, (5, 1));
    assert_eq!(entries[2].1, 0o100_755);
    assert_eq!(entries[2].6, b"#!/bin/sh\n");
    assert_eq!(entries[6].1, 0o120_777);
    assert_eq!(entries[6].6, b"tpm2");
}

#[test]
fn the_same_tree_gives_the_same_bytes_whatever_the_insertion_order() {
    let a = tree(&[("b/x", file(b"1")), ("a", file(b"22")), ("b/y", Node::Dir)]);
    let b = tree(&[("b/y", Node::Dir), ("a", file(b"22")), ("b/x", file(b"1"))]);
    assert_eq!(write_newc(&a), write_newc(&b));
    let gz = gzip(&write_newc(&a));
    assert_eq!(gz, gzip(&write_newc(&b)));
    // gzip header: magic, deflate, no flags (no name), mtime 0, OS unknown.
    assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    let mut plain = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, write_newc(&a));
}

#[test]
fn bad_paths_and_conflicts_are_refused() {
    let mut t = Tree::default();
    for bad in ["", "/abs", "a//b", "a/../b", "./a"] {
        assert!(
            matches!(t.insert(bad, Node::Dir), Err(TreeError::BadPath(_))),
            "{bad}"
        );
    }
    t.insert("a", file(b"x")).unwrap();
    t.insert("a", file(b"x")).unwrap();
    assert!(matches!(
        t.insert("a", file(b"y")),
        Err(TreeError::Conflict { .. })
    ));
    assert!(matches!(
        t.insert("a/b", file(b"y")),
        Err(TreeError::ParentNotDir { .. })
    ));
}

#[test]
fn depends_fields_give_names_and_alternatives() {
    assert_eq!(
        parse_depends("libc6 (>= 2.34), libcurl3-gnutls (>= 7.16.2) | libcurl4, perl:any"),
        vec![
            vec!["libc6".to_owned()],
            vec!["libcurl3-gnutls".to_owned(), "libcurl4".to_owned()],
            vec!["perl".to_owned()]
        ]
    );
    assert!(parse_depends("").is_empty());
}

#[test]
fn the_init_script_carries_the_shared_constants_and_no_placeholder() {
    let init = render_init();
    assert!(init.starts_with("#!/bin/sh\n"));
    assert!(!init.contains('@'), "an unfilled @NAME@ placeholder");
    assert!(init.contains(&format!("echo \"{}\"", slipway_guest_attest::NONCE_PROMPT)));
    assert!(init.contains("P='attest: '"));
    assert!(init.contains("base64 -w 96 "));
    assert!(init.contains("sha256:17,18,19,20,21") || init.contains(":17,18,19,20,21\""));
    assert!(init.contains("export TPM2TOOLS_TCTI=device:/dev/tpmrm0"));
    assert!(init.contains("-a '0x00050072'"));
    assert!(init.contains(&format!("gpa={}", slipway_protocol::v1::FIRMWARE_LOG_GPA)));
    // The harness waits for its own prefix of the prompt.
    assert!(slipway_guest_attest::NONCE_PROMPT.starts_with(crate::verify::NONCE_PROMPT));
}

/// The shell's syntax, checked by a shell (`sh -n`): the rendered script parses.
#[test]
fn the_init_script_parses() {
    let dir = std::env::temp_dir().join(format!("slipway-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("init");
    std::fs::write(&path, render_init()).unwrap();
    let status = std::process::Command::new("sh")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(status.success());
}

#[test]
fn the_transcript_of_the_qemu_run_parses_and_its_quote_checks() {
    let transcript = crate::verify::parse_transcript(QEMU_TRANSCRIPT).expect("verify's parser");
    let nonce = crate::verify::parse_hex(QEMU_NONCE).unwrap();
    assert_eq!(transcript.nonce.as_deref(), Some(&nonce[..]));
    assert!(!transcript.slipway_log.is_empty());
    assert!(
        transcript.firmware_log.is_empty(),
        "no window under plain QEMU"
    );
    assert_eq!(transcript.pcrs.len(), 10, "PCR17-21 in SHA-1 and SHA-256");
    // The key is slipway-tpm's ECC P-256 attestation-key template (`AkTemplate::EccP256`), as
    // the attest guest's: every field before the unique point is the template's (type ECC,
    // nameAlg SHA-256, attributes 0x00050072, empty policy, no symmetric, ECDSA-SHA256, P-256,
    // no KDF; the bytes slipway-tpm's verify tests captured from the guest's key), then two
    // 32-byte coordinates.
    let template_prefix =
        crate::verify::parse_hex("0023000b00050072000000100018000b00030010").expect("hex");
    assert_eq!(transcript.ak_public[..20], template_prefix[..]);
    assert_eq!(transcript.ak_public.len(), 20 + 2 + 32 + 2 + 32);
    let key = slipway_tpm::verify::parse_public(&transcript.ak_public).unwrap();
    assert_eq!(key.sec1_uncompressed().len(), 65);
    let quote = slipway_tpm::verify::verify_quote(
        &transcript.ak_public,
        &transcript.quote_attest,
        &transcript.quote_signature,
        &nonce,
    )
    .expect("the quote's signature and nonce check");
    assert_eq!(quote.info.extra_data, nonce);
    let banks: Vec<_> = quote
        .info
        .pcr_selection
        .iter()
        .map(|(alg, _)| *alg)
        .collect();
    assert_eq!(
        banks,
        [slipway_measure::AlgId::SHA1, slipway_measure::AlgId::SHA256]
    );
    for (_, mask) in &quote.info.pcr_selection {
        assert_eq!(*mask, slipway_tpm::PcrMask::QUOTE);
    }
    // A wrong nonce is refused.
    assert!(
        slipway_tpm::verify::verify_quote(
            &transcript.ak_public,
            &transcript.quote_attest,
            &transcript.quote_signature,
            b"another nonce",
        )
        .is_err()
    );
    // OVMF's log has no dynamic launch: verify says exactly that, after the quote checked.
    let rejection = crate::verify::verify(
        &transcript,
        &crate::verify::Requirements {
            nonce,
            bank: slipway_measure::HashAlg::Sha256,
            expected_log: Vec::new(),
        },
    )
    .unwrap_err();
    assert!(
        matches!(rejection, crate::verify::Rejection::Unmeasured(_)),
        "{rejection}"
    );
}

/// tpm2-tools' own check of the same quote, from `cargo xtask export`'s files, with the PCR
/// values the quote covers (all FF: no dynamic launch under plain QEMU).
#[test]
fn tpm2_checkquote_accepts_the_qemu_runs_quote() {
    let transcript = crate::verify::parse_transcript(QEMU_TRANSCRIPT).unwrap();
    let dir = std::env::temp_dir().join(format!("slipway-checkquote-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in crate::fleet::export_files(&transcript).unwrap() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let selection = crate::fleet::quote_selection(&transcript).unwrap();
    let pcrs = crate::fleet::tpm2_pcrs_file(&selection, |alg, _| {
        let len = alg.digest_size()?;
        slipway_measure::Digest::new(alg, &vec![0xff; len]).ok()
    })
    .unwrap();
    std::fs::write(dir.join("ff.pcrs"), pcrs).unwrap();
    let output = std::process::Command::new("tpm2_checkquote")
        .arg("-u")
        .arg(dir.join("ak.pem"))
        .arg("-m")
        .arg(dir.join("quote.msg"))
        .arg("-s")
        .arg(dir.join("quote.sig"))
        .arg("-f")
        .arg(dir.join("ff.pcrs"))
        .args(["-q", QEMU_NONCE, "-g", "sha256"])
        .output()
        .expect("tpm2_checkquote (tpm2-tools; cargo xtask setup installs it)");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        output.status.success(),
        "tpm2_checkquote refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A minimal ELF64 shared object: `DT_NEEDED` entries (in `.dynamic`, names in `.dynstr`, found
/// through the section headers as in Debian's libraries) and an optional `PT_INTERP`.
fn elf(needed: &[&str], interp: Option<&str>) -> Vec<u8> {
    let phnum = 1 + usize::from(interp.is_some());
    let mut data = Vec::new();
    let data_at = 64 + 56 * phnum;
    let interp_at = data_at;
    if let Some(i) = interp {
        data.extend_from_slice(i.as_bytes());
        data.push(0);
    }
    let dynstr_at = data_at + data.len();
    let mut dynstr = vec![0u8];
    let mut offsets = Vec::new();
    for name in needed {
        offsets.push(dynstr.len() as u64);
        dynstr.extend_from_slice(name.as_bytes());
        dynstr.push(0);
    }
    data.extend_from_slice(&dynstr);
    while !(data_at + data.len()).is_multiple_of(8) {
        data.push(0);
    }
    let dynamic_at = data_at + data.len();
    for off in &offsets {
        data.extend_from_slice(&1u64.to_le_bytes()); // DT_NEEDED
        data.extend_from_slice(&off.to_le_bytes());
    }
    data.extend_from_slice(&[0; 16]); // DT_NULL
    let dynamic_len = data_at + data.len() - dynamic_at;
    let shstrtab_at = data_at + data.len();
    let shstrtab = b"\0.dynstr\0.dynamic\0.shstrtab\0";
    data.extend_from_slice(shstrtab);
    while !(data_at + data.len()).is_multiple_of(8) {
        data.push(0);
    }
    let shoff = data_at + data.len();

    let mut out = Vec::new();
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for v in [3u16, 62] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&1u32.to_le_bytes());
    for v in [0u64, 64, shoff as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, phnum as u16, 64, 4, 3] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let phdr = |out: &mut Vec<u8>, kind: u32, at: usize, len: usize| {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&4u32.to_le_bytes());
        for v in [at, at, at, len, len, 8] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
    };
    if let Some(i) = interp {
        phdr(&mut out, 3, interp_at, i.len() + 1); // PT_INTERP
    }
    phdr(&mut out, 2, dynamic_at, dynamic_len); // PT_DYNAMIC
    out.extend_from_slice(&data);
    let shdr =
        |out: &mut Vec<u8>, name: u32, kind: u32, at: usize, len: usize, link: u32, ent: u64| {
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            for v in [0u64, at as u64, at as u64, len as u64] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&link.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&8u64.to_le_bytes());
            out.extend_from_slice(&ent.to_le_bytes());
        };
    out.extend_from_slice(&[0; 64]);
    shdr(&mut out, 1, 3, dynstr_at, dynstr.len(), 0, 0); // .dynstr
    shdr(&mut out, 9, 6, dynamic_at, dynamic_len, 1, 16); // .dynamic
    shdr(&mut out, 18, 3, shstrtab_at, shstrtab.len(), 0, 0); // .shstrtab
    out
}

#[test]
fn elf_needs_reads_dt_needed_in_order_and_the_interpreter() {
    let bytes = elf(&["liba.so.1", "libc.so.6"], Some("/lib64/ld.so.2"));
    let (needed, interp) = elf_needs(&bytes, "x").unwrap();
    assert_eq!(needed, ["liba.so.1", "libc.so.6"]);
    assert_eq!(interp.as_deref(), Some("/lib64/ld.so.2"));
    assert_eq!(elf_needs(&elf(&[], None), "y").unwrap(), (vec![], None));
    assert!(matches!(
        elf_needs(b"#!/bin/sh\n", "z"),
        Err(InitramfsError::Elf { .. })
    ));
}

enum Content {
    Elf(&'static [&'static str], Option<&'static str>),
    Link(&'static str),
}

/// A fake package: its files and its dependencies.
type FakePackage = (Vec<(&'static str, Content)>, Vec<Vec<String>>);

/// Packages written to a directory on first use; records which were unpacked.
struct FakeSource {
    dir: PathBuf,
    packages: BTreeMap<&'static str, FakePackage>,
    unpacked: Vec<String>,
}

impl PackageSource for FakeSource {
    fn unpack(&mut self, name: &str) -> Result<Option<Unpacked>, InitramfsError> {
        let Some((files, depends)) = self.packages.get(name) else {
            return Ok(None);
        };
        self.unpacked.push(name.to_owned());
        let root = self.dir.join(name);
        for (path, content) in files {
            let at = root.join(path);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            match content {
                Content::Elf(needed, interp) => std::fs::write(&at, elf(needed, *interp)).unwrap(),
                Content::Link(target) => std::os::unix::fs::symlink(target, &at).unwrap(),
            }
        }
        Ok(Some(Unpacked {
            deb: DebPackage {
                name: name.to_owned(),
                version: "1".into(),
                sha256: String::new(),
            },
            depends: depends.clone(),
            root,
        }))
    }
}

fn deps(text: &str) -> Vec<Vec<String>> {
    parse_depends(text)
}

fn fake_source(test: &str) -> FakeSource {
    let dir = std::env::temp_dir().join(format!("slipway-closure-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut packages = BTreeMap::new();
    packages.insert(
        "app",
        (
            vec![(
                "usr/bin/app",
                Content::Elf(&["liba.so.1", "libc.so.6"], Some("/lib64/ld.so.2")),
            )],
            deps("virtual-x | libc, liba (>= 1), unused"),
        ),
    );
    packages.insert(
        "libc",
        (
            vec![
                (
                    "lib/x86_64-linux-gnu/libc.so.6",
                    Content::Elf(&["ld.so.2"], Some("/lib64/ld.so.2")),
                ),
                ("lib/x86_64-linux-gnu/ld.so.2", Content::Elf(&[], None)),
                (
                    "lib64/ld.so.2",
                    Content::Link("/lib/x86_64-linux-gnu/ld.so.2"),
                ),
            ],
            vec![],
        ),
    );
    packages.insert(
        "liba",
        (
            vec![
                (
                    "usr/lib/x86_64-linux-gnu/liba.so.1",
                    Content::Link("liba.so.1.2.3"),
                ),
                (
                    "usr/lib/x86_64-linux-gnu/liba.so.1.2.3",
                    Content::Elf(&["libb.so.2", "libc.so.6"], None),
                ),
            ],
            deps("libc, libb"),
        ),
    );
    packages.insert(
        "libb",
        (
            vec![(
                "usr/lib/x86_64-linux-gnu/libb.so.2",
                Content::Elf(&[], None),
            )],
            vec![],
        ),
    );
    packages.insert(
        "plugin",
        (
            vec![(
                "usr/lib/x86_64-linux-gnu/libplug.so.0",
                Content::Elf(&["libb.so.2"], None),
            )],
            deps("libb"),
        ),
    );
    packages.insert(
        "broken",
        (
            vec![("usr/bin/broken", Content::Elf(&["libmissing.so.1"], None))],
            deps("libc, virtual-x"),
        ),
    );
    packages.insert(
        "escaping",
        (
            vec![("usr/bin/out", Content::Link("../../../../etc/passwd"))],
            vec![],
        ),
    );
    packages.insert("unused", (vec![], vec![]));
    FakeSource {
        dir,
        packages,
        unpacked: Vec::new(),
    }
}

#[test]
fn the_closure_follows_dt_needed_interp_and_dependencies() {
    let mut source = fake_source("ok");
    let closure = resolve_closure(
        &mut source,
        &[("app", "usr/bin/app")],
        &[("plugin", "libplug.so.0")],
    )
    .unwrap();
    let paths: Vec<&str> = closure.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib64/ld.so.2",
            "usr/bin/app",
            "usr/lib/x86_64-linux-gnu/liba.so.1",
            "usr/lib/x86_64-linux-gnu/libb.so.2",
            "usr/lib/x86_64-linux-gnu/libplug.so.0",
        ],
        "the loader once, at its PT_INTERP path (libc's DT_NEEDED on it is satisfied by it)"
    );
    let (package, file) = &closure.files["usr/lib/x86_64-linux-gnu/liba.so.1"];
    assert_eq!(package, "liba");
    assert!(file.ends_with("liba.so.1.2.3"), "the soname link's target");
    assert_eq!(closure.files["lib64/ld.so.2"].0, "libc");
    // The virtual alternative is skipped, `unused` (nothing needed from it) never fetched.
    assert_eq!(source.unpacked, ["app", "plugin", "libc", "liba", "libb"]);
    let names: Vec<&str> = closure.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["app", "plugin", "libc", "liba", "libb"]);
    std::fs::remove_dir_all(&source.dir).unwrap();
}

#[test]
fn a_soname_no_dependency_provides_is_named() {
    let mut source = fake_source("missing");
    let e = resolve_closure(&mut source, &[("broken", "usr/bin/broken")], &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("libmissing.so.1")
            && e.contains("usr/bin/broken")
            && e.contains("libc, virtual-x"),
        "{e}"
    );
    let e = resolve_closure(&mut source, &[("app", "usr/bin/nope")], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("usr/bin/nope"), "{e}");
    let e = resolve_closure(&mut source, &[("escaping", "usr/bin/out")], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("leaves the package"), "{e}");
    std::fs::remove_dir_all(&source.dir).unwrap();
}

#[test]
fn the_shell_offer_is_printed_verbatim_and_answered_by_the_harness() {
    // The offer sits inside double quotes in /init: nothing the shell would expand.
    for special in ['"', '`', '$', '\\'] {
        assert!(!SHELL_OFFER.contains(special), "{special}");
    }
    let init = render_init();
    assert!(init.contains(&format!("echo \"{SHELL_OFFER}\"")));
    assert!(init.contains(&format!("\"{SHELL_ANSWER}\"")));
    assert_eq!(shell_offer_answer(true).bytes, b"shell\n");
    assert_ne!(shell_offer_answer(false).bytes, b"shell\n");
    assert_eq!(shell_offer_answer(false).after_line_containing, SHELL_OFFER);
}
