//! Test-input builders: a flattened device tree writer and an ELF writer.

pub struct Node {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            props: Vec::new(),
            children: Vec::new(),
        }
    }
    pub fn prop(mut self, name: &str, value: Vec<u8>) -> Self {
        self.set(name, value);
        self
    }
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        self.props.retain(|(n, _)| n != name);
        self.props.push((name.into(), value));
    }
    pub fn remove(&mut self, name: &str) {
        self.props.retain(|(n, _)| n != name);
    }
    pub fn child(mut self, child: Node) -> Self {
        self.children.push(child);
        self
    }
    pub fn find(&mut self, path: &[&str]) -> &mut Node {
        let mut node = self;
        for part in path {
            node = node
                .children
                .iter_mut()
                .find(|c| c.name == *part)
                .expect("test path exists");
        }
        node
    }
}

pub fn s(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn strs(list: &[&str]) -> Vec<u8> {
    list.iter().flat_map(|t| s(t)).collect()
}

pub fn u32v(value: u32) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub fn u64v(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn write_node(node: &Node, structure: &mut Vec<u8>, strings: &mut Vec<u8>) {
    structure.extend_from_slice(&1u32.to_be_bytes());
    structure.extend_from_slice(node.name.as_bytes());
    structure.push(0);
    pad(structure);
    for (name, value) in &node.props {
        let offset = match find_sub(strings, name) {
            Some(offset) => offset,
            None => {
                let offset = strings.len();
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                offset
            }
        };
        structure.extend_from_slice(&3u32.to_be_bytes());
        structure.extend_from_slice(&(value.len() as u32).to_be_bytes());
        structure.extend_from_slice(&(offset as u32).to_be_bytes());
        structure.extend_from_slice(value);
        pad(structure);
    }
    for child in &node.children {
        write_node(child, structure, strings);
    }
    structure.extend_from_slice(&2u32.to_be_bytes());
}

fn find_sub(strings: &[u8], name: &str) -> Option<usize> {
    let mut needle = name.as_bytes().to_vec();
    needle.push(0);
    let mut start = 0;
    for (i, &b) in strings.iter().enumerate() {
        if b == 0 {
            if strings[start..=i] == needle[..] {
                return Some(start);
            }
            start = i + 1;
        }
    }
    None
}

/// A DTB as dtc would write it (header, empty reservation map, structure, strings).
pub fn dtb(root: &Node) -> Vec<u8> {
    let mut structure = Vec::new();
    let mut strings = Vec::new();
    write_node(root, &mut structure, &mut strings);
    structure.extend_from_slice(&9u32.to_be_bytes());
    let off_rsvmap = 40u32;
    let off_struct = off_rsvmap + 16;
    let off_strings = off_struct + structure.len() as u32;
    let total = off_strings + strings.len() as u32;
    let mut out = Vec::new();
    for value in [
        0xd00d_feed,
        total,
        off_struct,
        off_strings,
        off_rsvmap,
        17,
        16,
        0,
        strings.len() as u32,
        structure.len() as u32,
    ] {
        out.extend_from_slice(&u32::to_be_bytes(value));
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&structure);
    out.extend_from_slice(&strings);
    out
}

pub fn domain(name: &str, kernel: &str, memory_kib: u64) -> Node {
    Node::new(name)
        .prop("compatible", s("slipway,domain"))
        .prop("memory", u64v(memory_kib))
        .prop("kernel", s(kernel))
}

/// A valid configuration: control domain `ctl` and two hello domains, plus a policy node.
pub fn config_tree() -> Node {
    Node::new("").child(
        Node::new("chosen").child(
            Node::new("hypervisor")
                .prop("compatible", s("slipway,launch-config"))
                .child(
                    Node::new("policy")
                        .prop("compatible", s("slipway,launch-policy"))
                        .prop("unmeasured-launch", s("start-all"))
                        .prop("tpm-unavailable", s("start-all"))
                        .prop("digest-not-allowed", s("halt")),
                )
                .child(
                    domain("hello-a", "hello", 16 * 1024)
                        .prop("boot-order", u32v(2))
                        .prop("bootargs", s("name=hello-a")),
                )
                .child(
                    domain("hello-b", "hello", 16 * 1024)
                        .prop("boot-order", u32v(3))
                        .prop("cpus", u32v(2)),
                )
                .child(
                    domain("ctl", "hello", 16 * 1024)
                        .prop("boot-order", u32v(1))
                        .prop("capabilities", strs(&["control", "recovery"])),
                ),
        ),
    )
}

pub const MODULES: &[&str] = &["domb", "config", "hello", "initrd"];

pub struct Load {
    pub paddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
    pub flags: u32,
}

pub struct ElfSpec {
    pub class: u8,
    pub data_encoding: u8,
    pub machine: u16,
    pub etype: u16,
    pub loads: Vec<Load>,
    /// Raw descriptor of the PHYS32_ENTRY note, if any.
    pub entry_note: Option<Vec<u8>>,
    pub note_name: &'static [u8],
}

impl ElfSpec {
    pub fn pvh(entry: u32) -> Self {
        Self {
            class: 2,
            data_encoding: 1,
            machine: 62,
            etype: 2,
            loads: vec![
                Load {
                    paddr: 0x10_0000,
                    data: vec![0x90; 0x1800],
                    memsz: 0x1800,
                    flags: 5,
                },
                Load {
                    paddr: 0x10_2000,
                    data: vec![0xaa; 0x100],
                    memsz: 0x3000,
                    flags: 6,
                },
            ],
            entry_note: Some(entry.to_le_bytes().to_vec()),
            note_name: b"Xen\0",
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let phnum = self.loads.len() + usize::from(self.entry_note.is_some());
        let mut note = Vec::new();
        if let Some(desc) = &self.entry_note {
            note.extend_from_slice(&(self.note_name.len() as u32).to_le_bytes());
            note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note.extend_from_slice(&18u32.to_le_bytes());
            note.extend_from_slice(self.note_name);
            pad(&mut note);
            note.extend_from_slice(desc);
            pad(&mut note);
        }
        let note_offset = 64 + 56 * phnum;
        let mut payload_offset = note_offset + note.len();
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = self.class;
        out[5] = self.data_encoding;
        out[6] = 1;
        out[16..18].copy_from_slice(&self.etype.to_le_bytes());
        out[18..20].copy_from_slice(&self.machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        let mut payloads = Vec::new();
        for load in &self.loads {
            out.extend_from_slice(&phdr(
                1,
                load.flags,
                payload_offset as u64,
                load.paddr,
                load.data.len() as u64,
                load.memsz,
                0x1000,
            ));
            payloads.extend_from_slice(&load.data);
            payload_offset += load.data.len();
        }
        if self.entry_note.is_some() {
            out.extend_from_slice(&phdr(
                4,
                4,
                note_offset as u64,
                0,
                note.len() as u64,
                note.len() as u64,
                4,
            ));
        }
        out.extend_from_slice(&note);
        out.extend_from_slice(&payloads);
        out
    }
}

fn phdr(
    p_type: u32,
    flags: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&p_type.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&paddr.to_le_bytes()); // vaddr
    out.extend_from_slice(&paddr.to_le_bytes());
    out.extend_from_slice(&filesz.to_le_bytes());
    out.extend_from_slice(&memsz.to_le_bytes());
    out.extend_from_slice(&align.to_le_bytes());
    out
}
