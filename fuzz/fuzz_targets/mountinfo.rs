//! Fuzzes the mount table parser, `bilge::collect::disk::parse_mountinfo`, which reads
//! `/proc/self/mountinfo` on every filesystem collection.
//!
//! The input is read twice. As text, it must parse without a panic into at most one mount per
//! line, each read-only exactly when its mount options say `ro`. As a recipe (through
//! `arbitrary`), it builds mount table lines the way the kernel writes them (`show_mountinfo`:
//! optional fields, and the space, tab, newline and backslash of the root, mount point,
//! filesystem type and source escaped as `\ooo`), and the parser must give back exactly the
//! device, mount point, type and read-only flag that went in.

#![no_main]

use bilge::collect::disk::{Mount, parse_mountinfo};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mounts = parse_mountinfo(&text);
    assert!(mounts.len() <= text.lines().count());

    let mut u = Unstructured::new(data);
    if let Ok((table, want)) = kernel_table(&mut u) {
        let got = parse_mountinfo(&table);
        assert_eq!(got, want, "read back from {table:?}");
    }
});

/// A mount table of one to four mounts, as the kernel prints it, and the mounts it holds.
fn kernel_table(u: &mut Unstructured<'_>) -> Result<(String, Vec<Mount>)> {
    let mut table = String::new();
    let mut mounts = Vec::new();
    for id in 0..u.int_in_range(1..=4u32)? {
        let m = Mount {
            device: u.arbitrary()?,
            mountpoint: format!("/{}", u.arbitrary::<String>()?),
            fstype: u.arbitrary()?,
            readonly: u.arbitrary()?,
            dev: Some((u64::from(id), u64::from(id))),
            fs_readonly: u.arbitrary()?,
        };
        let root = format!("/{}", u.arbitrary::<String>()?);
        let mut optional = String::new();
        for peer in 0..u.int_in_range(0..=2u32)? {
            optional.push_str(&format!(" shared:{peer}"));
        }
        let options = if m.readonly {
            "ro,relatime"
        } else {
            "rw,nosuid"
        };
        table.push_str(&format!(
            "{} 1 {id}:{id} {} {} {options}{optional} - {} {} {},seclabel\n",
            20 + id,
            escape(&root),
            escape(&m.mountpoint),
            escape(&m.fstype),
            escape(&m.device),
            if m.fs_readonly { "ro" } else { "rw" },
        ));
        mounts.push(m);
    }
    Ok((table, mounts))
}

/// Escapes a field as the kernel's mountinfo does: space, tab, newline and backslash as `\ooo`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}
