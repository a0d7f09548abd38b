use super::fixtures::*;
use crate::config::{self, Capabilities, ConfigError, Problem};
use crate::dtb::DtbError;
use crate::policy::{Action, Policy};

const HV: &str = "/chosen/hypervisor";

fn parse(tree: &Node) -> Result<config::LaunchConfig, ConfigError> {
    config::parse(&dtb(tree), MODULES)
}

fn error_of(tree: &Node) -> ConfigError {
    parse(tree).expect_err("configuration must be refused")
}

fn assert_error(tree: &Node, node: &str, property: Option<&str>, problem: Problem) {
    let error = error_of(tree);
    assert_eq!(error.node, node, "{error}");
    assert_eq!(error.property.as_deref(), property, "{error}");
    assert_eq!(error.problem, problem, "{error}");
}

fn with_domain(edit: impl FnOnce(&mut Node)) -> Node {
    let mut tree = config_tree();
    edit(tree.find(&["chosen", "hypervisor", "hello-a"]));
    tree
}

#[test]
fn parses_valid_configuration_in_boot_order() {
    let config = parse(&config_tree()).unwrap();
    let names: Vec<_> = config.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ctl", "hello-a", "hello-b"]);
    let ctl = &config.domains[0];
    assert_eq!(ctl.node, "/chosen/hypervisor/ctl");
    assert_eq!(
        ctl.capabilities,
        Capabilities {
            control: true,
            hardware: false,
            recovery: true,
            tpm: false,
        }
    );
    assert_eq!(ctl.memory_bytes, 16 << 20);
    assert_eq!(ctl.vcpus, 1);
    assert_eq!(ctl.kernel, "hello");
    assert_eq!(ctl.ramdisk, None);
    assert_eq!(config.domains[1].bootargs, "name=hello-a");
    assert_eq!(config.domains[2].vcpus, 2);
    assert_eq!(
        config.policy,
        Policy {
            unmeasured_launch: Action::StartAll,
            tpm_unavailable: Action::StartAll,
            digest_not_allowed: Action::Halt
        }
    );
    assert_eq!(
        config.policy_node.as_deref(),
        Some("/chosen/hypervisor/policy")
    );
}

#[test]
fn unordered_domains_start_last_in_node_order() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "ctl"])
        .remove("boot-order");
    let config = parse(&tree).unwrap();
    let names: Vec<_> = config.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["hello-a", "hello-b", "ctl"]);
}

#[test]
fn missing_policy_node_gives_default_policy() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor"])
        .children
        .retain(|c| c.name != "policy");
    let config = parse(&tree).unwrap();
    assert_eq!(config.policy, Policy::default());
    assert_eq!(config.policy.unmeasured_launch, Action::RecoveryOnly);
    assert_eq!(config.policy_node, None);
}

#[test]
fn memory_in_one_cell_and_ramdisk_and_domain_name() {
    let tree = with_domain(|d| {
        d.set("memory", u32v(8192));
        d.set("ramdisk", s("initrd"));
        d.set("domain-name", s("renamed"));
        d.set("allowed-sha256", vec![7; 64]);
    });
    let config = parse(&tree).unwrap();
    let domain = config
        .domains
        .iter()
        .find(|d| d.node.ends_with("hello-a"))
        .unwrap();
    assert_eq!(domain.memory_bytes, 8 << 20);
    assert_eq!(domain.ramdisk.as_deref(), Some("initrd"));
    assert_eq!(domain.name, "renamed");
    assert_eq!(domain.allowed_sha256, vec![[7u8; 32], [7u8; 32]]);
}

#[test]
fn refuses_bad_memory_sizes_naming_node_and_property() {
    let node = "/chosen/hypervisor/hello-a";
    let cases = [
        (u64v(0), Problem::ZeroMemory),
        (u64v(6), Problem::MemoryNotPageMultiple),
        // 16 GiB + 4 KiB (in KiB): one page past the largest domain.
        (u64v(16 * 1024 * 1024 + 4), Problem::MemoryTooBig),
        (u64v(u64::MAX), Problem::MemoryTooBig),
        (vec![0; 3], Problem::NotASize),
        (vec![0; 12], Problem::NotASize),
    ];
    for (value, problem) in cases {
        let tree = with_domain(|d| d.set("memory", value));
        assert_error(&tree, node, Some("memory"), problem);
    }
    let tree = with_domain(|d| d.remove("memory"));
    assert_error(&tree, node, Some("memory"), Problem::MissingProperty);
    let message = error_of(&with_domain(|d| d.set("memory", u64v(0)))).to_string();
    assert!(
        message.contains("/chosen/hypervisor/hello-a") && message.contains("memory"),
        "{message}"
    );
}

#[test]
fn refuses_duplicate_and_malformed_names() {
    let tree = with_domain(|d| d.set("domain-name", s("hello-b")));
    let error = error_of(&tree);
    assert_eq!(error.node, "/chosen/hypervisor/hello-b");
    assert_eq!(error.property.as_deref(), Some("node name"));
    assert_eq!(
        error.problem,
        Problem::DuplicateName("/chosen/hypervisor/hello-a".into())
    );

    for bad in [
        "Hello",
        "under_score",
        "",
        "a-very-long-domain-name-over-31-chars",
    ] {
        let tree = with_domain(|d| d.set("domain-name", s(bad)));
        assert_error(
            &tree,
            "/chosen/hypervisor/hello-a",
            Some("domain-name"),
            Problem::MalformedName,
        );
    }
    for reserved in ["domb", "slipway", "hypervisor"] {
        let tree = with_domain(|d| d.set("domain-name", s(reserved)));
        assert_error(
            &tree,
            "/chosen/hypervisor/hello-a",
            Some("domain-name"),
            Problem::ReservedName,
        );
    }
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-a"]).name = "Hello_A".into();
    assert_error(
        &tree,
        "/chosen/hypervisor/Hello_A",
        Some("node name"),
        Problem::MalformedName,
    );
    let tree = with_domain(|d| d.set("domain-name", strs(&["two", "strings"])));
    assert_error(
        &tree,
        "/chosen/hypervisor/hello-a",
        Some("domain-name"),
        Problem::NotAString,
    );
}

#[test]
fn refuses_missing_and_reserved_modules() {
    let node = "/chosen/hypervisor/hello-a";
    let tree = with_domain(|d| d.set("kernel", s("nope")));
    assert_error(
        &tree,
        node,
        Some("kernel"),
        Problem::MissingModule("nope".into()),
    );
    let tree = with_domain(|d| d.set("ramdisk", s("gone")));
    assert_error(
        &tree,
        node,
        Some("ramdisk"),
        Problem::MissingModule("gone".into()),
    );
    let tree = with_domain(|d| d.set("kernel", s("domb")));
    assert_error(
        &tree,
        node,
        Some("kernel"),
        Problem::ReservedModule("domb".into()),
    );
    let tree = with_domain(|d| d.set("ramdisk", s("config")));
    assert_error(
        &tree,
        node,
        Some("ramdisk"),
        Problem::ReservedModule("config".into()),
    );
    let tree = with_domain(|d| d.remove("kernel"));
    assert_error(&tree, node, Some("kernel"), Problem::MissingProperty);
    let tree = with_domain(|d| d.set("kernel", vec![b'x']));
    assert_error(&tree, node, Some("kernel"), Problem::NotAString);
}

#[test]
fn refuses_capability_errors() {
    let node = "/chosen/hypervisor/hello-a";
    let tree = with_domain(|d| d.set("capabilities", strs(&["control", "root"])));
    assert_error(
        &tree,
        node,
        Some("capabilities"),
        Problem::UnknownCapability("root".into()),
    );
    let tree = with_domain(|d| d.set("capabilities", strs(&["recovery", "recovery"])));
    assert_error(
        &tree,
        node,
        Some("capabilities"),
        Problem::DuplicateCapability("recovery".into()),
    );
    let mut tree = with_domain(|d| d.set("capabilities", strs(&["hardware"])));
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("capabilities", strs(&["hardware"]));
    assert_error(
        &tree,
        "/chosen/hypervisor/hello-b",
        Some("capabilities"),
        Problem::SecondHardwareDomain(node.into()),
    );
}

#[test]
fn the_tpm_capability_goes_to_at_most_one_domain_and_the_error_names_both_nodes() {
    let tree = with_domain(|d| d.set("capabilities", strs(&["control", "tpm"])));
    let config = parse(&tree).unwrap();
    let tpm: Vec<&str> = config
        .domains
        .iter()
        .filter(|d| d.capabilities.tpm)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(tpm, ["hello-a"]);

    let mut tree = with_domain(|d| d.set("capabilities", strs(&["tpm"])));
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("capabilities", strs(&["control", "tpm"]));
    let error = error_of(&tree);
    assert_eq!(
        (error.node.as_str(), error.property.as_deref()),
        ("/chosen/hypervisor/hello-b", Some("capabilities"))
    );
    assert_eq!(
        error.problem,
        Problem::SecondTpmDomain("/chosen/hypervisor/hello-a".into())
    );
    let message = error.to_string();
    assert!(
        message.contains("/chosen/hypervisor/hello-a")
            && message.contains("/chosen/hypervisor/hello-b")
            && message.contains("tpm capability"),
        "{message}"
    );
}

#[test]
fn refuses_bad_scalar_properties() {
    let node = "/chosen/hypervisor/hello-a";
    for (value, problem) in [
        (u32v(0), Problem::BadCpuCount),
        (u32v(9), Problem::BadCpuCount),
        (u64v(1), Problem::NotACell),
    ] {
        let tree = with_domain(|d| d.set("cpus", value));
        assert_error(&tree, node, Some("cpus"), problem);
    }
    let tree = with_domain(|d| d.set("boot-order", vec![1, 2]));
    assert_error(&tree, node, Some("boot-order"), Problem::NotACell);
    let tree = with_domain(|d| d.set("bootargs", s(&"x".repeat(1025))));
    assert_error(&tree, node, Some("bootargs"), Problem::BootargsTooLong);
    for value in [vec![], vec![1; 33]] {
        let tree = with_domain(|d| d.set("allowed-sha256", value));
        assert_error(&tree, node, Some("allowed-sha256"), Problem::BadDigestList);
    }
    let tree = with_domain(|d| d.set("colour", s("blue")));
    assert_error(&tree, node, Some("colour"), Problem::UnknownProperty);
    let tree = with_domain(|d| d.set("compatible", s("xen,domain")));
    assert_error(
        &tree,
        node,
        Some("compatible"),
        Problem::NotCompatible("slipway,domain"),
    );
    let tree = with_domain(|d| d.children.push(Node::new("module")));
    assert_error(
        &tree,
        "/chosen/hypervisor/hello-a/module",
        None,
        Problem::UnknownNode,
    );
}

#[test]
fn refuses_structural_errors() {
    let mut tree = config_tree();
    tree.find(&["chosen"]).name = "elsewhere".into();
    assert_error(&tree, HV, None, Problem::MissingNode);

    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor"]).remove("compatible");
    assert_error(&tree, HV, Some("compatible"), Problem::MissingProperty);

    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor"]).set("surprise", vec![]);
    assert_error(&tree, HV, Some("surprise"), Problem::UnknownProperty);

    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor"])
        .children
        .retain(|c| c.name == "policy");
    assert_error(&tree, HV, None, Problem::NoDomains);

    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .remove("compatible");
    assert_error(
        &tree,
        "/chosen/hypervisor/hello-b",
        Some("compatible"),
        Problem::MissingProperty,
    );

    let mut tree = config_tree();
    let hv = tree.find(&["chosen", "hypervisor"]);
    for i in 0..33 {
        hv.children
            .push(domain(&format!("extra-{i}"), "hello", 4096));
    }
    assert_error(
        &tree,
        "/chosen/hypervisor/extra-12",
        None,
        Problem::TooManyDomains,
    );
}

#[test]
fn refuses_policy_errors() {
    let node = "/chosen/hypervisor/policy";
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "policy"])
        .set("unmeasured-launch", s("shrug"));
    assert_error(
        &tree,
        node,
        Some("unmeasured-launch"),
        Problem::UnknownAction("shrug".into()),
    );
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "policy"])
        .set("when-raining", s("halt"));
    assert_error(&tree, node, Some("when-raining"), Problem::UnknownProperty);
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "policy"])
        .remove("compatible");
    assert_error(&tree, node, Some("compatible"), Problem::MissingProperty);
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "policy"])
        .remove("tpm-unavailable");
    assert_eq!(
        parse(&tree).unwrap().policy.tpm_unavailable,
        Policy::default().tpm_unavailable
    );
}

#[test]
fn refuses_malformed_blobs() {
    let good = dtb(&config_tree());
    let cases: Vec<(Vec<u8>, DtbError)> = vec![
        (good[..20].to_vec(), DtbError::TooShortForHeader),
        (
            {
                let mut b = good.clone();
                b[0] = 0;
                b
            },
            DtbError::BadMagic,
        ),
        (
            good[..good.len() - 1].to_vec(),
            DtbError::TotalSizeBeyondBlob,
        ),
        (
            {
                let mut b = good.clone();
                b[23] = 2;
                b
            },
            DtbError::UnsupportedVersion,
        ),
        (
            {
                let mut b = good.clone();
                b[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
                b
            },
            DtbError::StructBlockOutOfBounds,
        ),
        (
            {
                let mut b = good.clone();
                b[12..16].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
                b
            },
            DtbError::StringsBlockOutOfBounds,
        ),
        // First token replaced by a NOP.
        (
            {
                let mut b = good.clone();
                b[56..60].copy_from_slice(&4u32.to_be_bytes());
                b
            },
            DtbError::UnexpectedToken,
        ),
    ];
    for (blob, expected) in cases {
        let error = config::parse(&blob, MODULES).unwrap_err();
        assert_eq!(error.problem, Problem::Dtb(expected));
        assert_eq!(error.node, "/");
    }
}

#[test]
fn refuses_deep_nesting_and_bad_property_name_offsets() {
    let mut deep = Node::new("n");
    for _ in 0..20 {
        let mut parent = Node::new("n");
        parent.children.push(deep);
        deep = parent;
    }
    let tree = Node::new("").child(deep);
    assert_eq!(
        config::parse(&dtb(&tree), MODULES).unwrap_err().problem,
        Problem::Dtb(DtbError::TooDeep)
    );

    let mut blob = dtb(&config_tree());
    // The first property of the tree is /chosen/hypervisor's compatible; find its nameoff field.
    let struct_off = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
    let mut at = struct_off;
    while u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) != 3 {
        at += 4;
    }
    blob[at + 8..at + 12].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
    assert_eq!(
        config::parse(&blob, MODULES).unwrap_err().problem,
        Problem::Dtb(DtbError::BadPropertyName)
    );
}

#[test]
fn demo_config_dts_parses() {
    let dts = concat!(env!("CARGO_MANIFEST_DIR"), "/../../images/demo/config.dts");
    let output = std::process::Command::new("dtc")
        .args(["-I", "dts", "-O", "dtb", dts])
        .output()
        .expect("dtc (device-tree-compiler) is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The module names are the bundle's own, so the test follows the demo's module list.
    let bundle = include_str!("../../../../images/demo/bundle.toml");
    let modules: Vec<&str> = bundle
        .lines()
        .filter_map(|line| line.trim().strip_prefix("name = \""))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(modules.contains(&"domb"), "no module names in {bundle}");
    let config = config::parse(&output.stdout, &modules).unwrap();
    assert!(
        config
            .domains
            .iter()
            .filter(|d| d.capabilities.control)
            .count()
            == 1
    );
    assert!(config.domains.len() >= 3);
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn mutated_blobs_give_errors_not_panics(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut blob = dtb(&config_tree());
            for (index, value) in flips {
                let i = index.index(blob.len());
                blob[i] = value;
            }
            if truncate {
                let len = cut.index(blob.len());
                blob.truncate(len);
            }
            let _ = config::parse(&blob, MODULES);
        }

        #[test]
        fn random_bytes_give_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = config::parse(&bytes, MODULES);
        }
    }
}
