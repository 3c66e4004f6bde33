//! Compact unwind tables for x86_64 ELF files, built from their `.eh_frame`, in the shape the CPU
//! sampler's BPF unwinder walks (`bpf/cpu_sampler.bpf.c`, `struct unwind_row`).
//!
//! One row per code range: the canonical frame address (CFA) is `rsp + offset` or `rbp + offset`,
//! the return address is at `CFA - 8`, and the caller's `rbp` is either unchanged or saved at
//! `CFA + offset`. That covers what compilers emit for ordinary functions, so the BPF side needs no
//! DWARF interpreter. Ranges the table cannot describe are rows of their own kind, so the walk
//! stops there (or, where no CFI exists at all, falls back to frame pointers) instead of guessing.

use std::fmt;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};

/// How one code range unwinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RowKind {
    /// No CFI covers these addresses (a gap between functions, code without CFI): the walk falls
    /// back to frame pointers.
    NoInfo = 0,
    /// CFA = rsp + `cfa_offset`.
    CfaRsp = 1,
    /// CFA = rbp + `cfa_offset`.
    CfaRbp = 2,
    /// The return address is undefined: the outermost frame of a thread (`_start`, `clone3`'s
    /// child). A walk that gets here is whole.
    End = 3,
    /// A PLT stub (the standard `.plt` expression): CFA = rsp + 8, plus 8 more once the stub has
    /// pushed its argument, i.e. when `pc & 15 >= cfa_offset`.
    Plt = 4,
    /// A rule the table cannot express (DWARF expressions, registers other than rsp/rbp, offsets
    /// out of range): the walk stops here and the stack counts as cut short.
    Unsupported = 5,
}

/// One row: the rule for addresses from `pc` up to the next row's `pc`. `pc` is an ELF virtual
/// address of the file (before any load bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    pub pc: u32,
    pub kind: RowKind,
    pub cfa_offset: i32,
    /// 0: the caller's rbp is still in rbp. Otherwise it was saved at CFA + `rbp_offset`.
    pub rbp_offset: i16,
}

impl UnwindRow {
    /// Size of `struct unwind_row` in the BPF program.
    pub const SIZE: usize = 12;

    /// The row as `struct unwind_row` lays it out (native endian: it goes to a map).
    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..4].copy_from_slice(&self.pc.to_ne_bytes());
        out[4..8].copy_from_slice(&self.cfa_offset.to_ne_bytes());
        out[8..10].copy_from_slice(&self.rbp_offset.to_ne_bytes());
        out[10] = self.kind as u8;
        out
    }
}

/// An executable `PT_LOAD` segment: where file offsets land in the ELF's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
}

/// The unwind table of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// Sorted by `pc`, no two rows with the same `pc`, no two neighbours with the same rule.
    pub rows: Vec<UnwindRow>,
    /// Executable segments, to turn a mapping's file offset into the table's addresses.
    pub segments: Vec<LoadSegment>,
}

impl UnwindTable {
    /// The row covering `pc` (an ELF virtual address): the last row starting at or before it.
    /// The BPF unwinder does the same binary search.
    pub fn row_for(&self, pc: u64) -> Option<UnwindRow> {
        let pc = u32::try_from(pc).ok()?;
        let after = self.rows.partition_point(|r| r.pc <= pc);
        after.checked_sub(1).map(|i| self.rows[i])
    }

    /// The ELF virtual address at the start of a mapping of this file at `file_offset`, when an
    /// executable segment holds that offset.
    pub fn vaddr_of_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| {
                file_offset >= s.file_offset - s.file_offset % 4096
                    && file_offset < s.file_offset + s.file_size
            })
            .map(|s| {
                file_offset
                    .wrapping_add(s.vaddr)
                    .wrapping_sub(s.file_offset)
            })
    }
}

/// Why no table could be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwindTableError {
    /// Not a 64-bit little-endian x86_64 ELF file, or its headers are cut short.
    NotX86_64Elf(&'static str),
    /// The file has no `.eh_frame` section.
    NoEhFrame,
    /// The file's code lies above 4 GiB, beyond the table's 32-bit addresses.
    AddressesTooHigh,
    /// `.eh_frame` is malformed.
    Parse(String),
}

impl fmt::Display for UnwindTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotX86_64Elf(why) => write!(f, "not a 64-bit x86_64 ELF file: {why}"),
            Self::NoEhFrame => write!(f, "no .eh_frame section"),
            Self::AddressesTooHigh => write!(f, "code above 4 GiB"),
            Self::Parse(e) => write!(f, "malformed .eh_frame: {e}"),
        }
    }
}

impl std::error::Error for UnwindTableError {}

struct Section<'a> {
    addr: u64,
    data: &'a [u8],
}

struct Elf<'a> {
    eh_frame: Option<Section<'a>>,
    text_addr: u64,
    segments: Vec<LoadSegment>,
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// The few ELF headers the table needs: executable segments and the `.eh_frame` and `.text`
/// sections.
fn parse_elf(data: &[u8]) -> Result<Elf<'_>, UnwindTableError> {
    use UnwindTableError::NotX86_64Elf as Bad;
    if data.get(0..4) != Some(b"\x7fELF") {
        return Err(Bad("no ELF magic"));
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(Bad("not 64-bit little-endian"));
    }
    if u16_at(data, 18) != Some(62) {
        return Err(Bad("machine is not x86_64"));
    }
    let cut = Bad("headers cut short");
    let phoff = u64_at(data, 32).ok_or(cut.clone())? as usize;
    let shoff = u64_at(data, 40).ok_or(cut.clone())? as usize;
    let phentsize = u16_at(data, 54).ok_or(cut.clone())? as usize;
    let phnum = u16_at(data, 56).ok_or(cut.clone())? as usize;
    let shentsize = u16_at(data, 58).ok_or(cut.clone())? as usize;
    let shnum = u16_at(data, 60).ok_or(cut.clone())? as usize;
    let shstrndx = u16_at(data, 62).ok_or(cut.clone())? as usize;

    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32_at(data, at).ok_or(cut.clone())?;
        let flags = u32_at(data, at + 4).ok_or(cut.clone())?;
        // PT_LOAD with PF_X.
        if kind == 1 && flags & 1 != 0 {
            segments.push(LoadSegment {
                file_offset: u64_at(data, at + 8).ok_or(cut.clone())?,
                vaddr: u64_at(data, at + 16).ok_or(cut.clone())?,
                file_size: u64_at(data, at + 32).ok_or(cut.clone())?,
            });
        }
    }

    let section = |i: usize| -> Option<(u32, u32, u64, u64, u64)> {
        let at = shoff + i * shentsize;
        Some((
            u32_at(data, at)?,      // name
            u32_at(data, at + 4)?,  // type
            u64_at(data, at + 16)?, // addr
            u64_at(data, at + 24)?, // offset
            u64_at(data, at + 32)?, // size
        ))
    };
    let mut elf = Elf {
        eh_frame: None,
        text_addr: 0,
        segments,
    };
    if shoff == 0 || shnum == 0 {
        return Ok(elf);
    }
    let (_, _, _, strtab_off, strtab_size) = section(shstrndx).ok_or(cut.clone())?;
    let names = data
        .get(strtab_off as usize..(strtab_off + strtab_size) as usize)
        .ok_or(cut.clone())?;
    let name_of = |at: u32| -> &[u8] {
        let rest = names.get(at as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    };
    for i in 0..shnum {
        let (name, kind, addr, offset, size) = section(i).ok_or(cut.clone())?;
        match name_of(name) {
            // SHT_NOBITS (8): only in separate debug files, where the section's bytes are absent.
            b".eh_frame" if kind != 8 => {
                let data = data
                    .get(offset as usize..(offset + size) as usize)
                    .ok_or(Bad(".eh_frame lies outside the file"))?;
                elf.eh_frame = Some(Section { addr, data });
            }
            b".text" => elf.text_addr = addr,
            _ => {}
        }
    }
    Ok(elf)
}

/// The `.plt` CFA expression GCC and binutils emit: rsp + 8 + ((rip & 15) >= N) << 3. Returns N.
fn plt_threshold(expression: &[u8]) -> Option<i32> {
    // DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litN; DW_OP_ge; DW_OP_lit3;
    // DW_OP_shl; DW_OP_plus
    match expression {
        [
            0x77,
            0x08,
            0x80,
            0x00,
            0x3f,
            0x1a,
            lit,
            0x2a,
            0x33,
            0x24,
            0x22,
        ] if (0x30..0x50).contains(lit) => Some(i32::from(*lit - 0x30)),
        _ => None,
    }
}

fn row_rule(row: &gimli::UnwindTableRow<usize>, eh_frame: &[u8]) -> (RowKind, i32, i16) {
    use RowKind::*;
    if matches!(row.register(X86_64::RA), Some(RegisterRule::Undefined)) {
        return (End, 0, 0);
    }
    let rbp = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => Some(0),
        Some(RegisterRule::Offset(n)) => i16::try_from(n).ok().filter(|&n| n != 0),
        Some(_) => None,
    };
    let Some(rbp_offset) = rbp else {
        return (Unsupported, 0, 0);
    };
    // The return address must be where the row's kind says: CFA - 8.
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return (Unsupported, 0, 0),
    }
    match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let kind = if *register == X86_64::RSP {
                CfaRsp
            } else if *register == X86_64::RBP {
                CfaRbp
            } else {
                return (Unsupported, 0, 0);
            };
            match i32::try_from(*offset) {
                Ok(offset) => (kind, offset, rbp_offset),
                Err(_) => (Unsupported, 0, 0),
            }
        }
        CfaRule::Expression(expression) => {
            let bytes = eh_frame.get(expression.offset..expression.offset + expression.length);
            match bytes.and_then(plt_threshold) {
                Some(threshold) => (Plt, threshold, rbp_offset),
                None => (Unsupported, 0, 0),
            }
        }
    }
}

/// Builds the unwind table of an x86_64 ELF file from its `.eh_frame`.
pub fn build_unwind_table(elf_bytes: &[u8]) -> Result<UnwindTable, UnwindTableError> {
    let elf = parse_elf(elf_bytes)?;
    let section = elf.eh_frame.ok_or(UnwindTableError::NoEhFrame)?;
    let eh_frame = EhFrame::new(section.data, LittleEndian);
    let bases = BaseAddresses::default()
        .set_eh_frame(section.addr)
        .set_text(elf.text_addr);
    let parse = |e: gimli::Error| UnwindTableError::Parse(e.to_string());

    // (pc, rule) for every row start and every FDE end; sorted and merged below.
    let mut starts: Vec<(u64, bool, (RowKind, i32, i16))> = Vec::new();
    let mut ctx = UnwindContext::new();
    let mut entries = eh_frame.entries(&bases);
    while let Some(entry) = entries.next().map_err(parse)? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = partial
            .parse(|section, bases, offset| section.cie_from_offset(bases, offset))
            .map_err(parse)?;
        if fde.len() == 0 {
            continue;
        }
        let mut table = fde.rows(&eh_frame, &bases, &mut ctx).map_err(parse)?;
        while let Some(row) = table.next_row().map_err(parse)? {
            if row.start_address() < row.end_address() {
                starts.push((row.start_address(), true, row_rule(row, section.data)));
            }
        }
        starts.push((fde.end_address(), false, (RowKind::NoInfo, 0, 0)));
    }
    // At one pc, a row that starts there wins over the end of the FDE before it.
    starts.sort_by_key(|&(pc, is_start, _)| (pc, !is_start));
    starts.dedup_by_key(|&mut (pc, _, _)| pc);

    let mut rows: Vec<UnwindRow> = Vec::with_capacity(starts.len());
    for (pc, _, (kind, cfa_offset, rbp_offset)) in starts {
        let same = |r: &UnwindRow| {
            r.kind == kind && r.cfa_offset == cfa_offset && r.rbp_offset == rbp_offset
        };
        if rows.last().is_some_and(same) {
            continue;
        }
        let pc = u32::try_from(pc).map_err(|_| UnwindTableError::AddressesTooHigh)?;
        rows.push(UnwindRow {
            pc,
            kind,
            cfa_offset,
            rbp_offset,
        });
    }
    Ok(UnwindTable {
        rows,
        segments: elf.segments,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use super::*;

    /// The rule readelf prints for one row (`LOC CFA ... rbp ... ra`), in this table's terms.
    fn readelf_rule(cfa: &str, rbp: Option<&str>, ra: &str) -> (RowKind, Option<i32>, i16) {
        if ra == "u" {
            return (RowKind::End, None, 0);
        }
        let rbp_offset = match rbp {
            None | Some("u") => 0,
            Some(saved) => match saved.strip_prefix("c").and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => return (RowKind::Unsupported, None, 0),
            },
        };
        let (kind, offset) = if cfa == "exp" {
            // The .plt expression (threshold not printed) or something the table refuses.
            return (RowKind::Plt, None, rbp_offset);
        } else if let Some(n) = cfa.strip_prefix("rsp+") {
            (RowKind::CfaRsp, n.parse().ok())
        } else if let Some(n) = cfa.strip_prefix("rbp+") {
            (RowKind::CfaRbp, n.parse().ok())
        } else {
            (RowKind::Unsupported, None)
        };
        if ra != "c-8" {
            return (RowKind::Unsupported, None, 0);
        }
        (kind, offset, rbp_offset)
    }

    /// Every row `readelf --debug-dump=frames-interp` prints for `path`, keyed by address.
    fn readelf_rows(path: &str) -> BTreeMap<u64, (RowKind, Option<i32>, i16)> {
        let out = Command::new("readelf")
            .args(["--debug-dump=frames-interp", path])
            .output()
            .expect("readelf (binutils) runs");
        // readelf exits 1 on files without `.debug_frame` even though it printed `.eh_frame`.
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(" FDE "), "readelf printed no FDE for {path}");
        let mut rows = BTreeMap::new();
        let mut columns: Vec<String> = Vec::new();
        let mut in_fde = false;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.get(3) == Some(&"FDE") {
                in_fde = true;
                continue;
            }
            if words.get(3) == Some(&"CIE") {
                in_fde = false;
                continue;
            }
            if words.first() == Some(&"LOC") {
                columns = words.iter().map(|w| w.to_string()).collect();
                continue;
            }
            // Rows start with a 16-digit address; entry headers and the terminator with 8.
            if !in_fde || words.len() != columns.len() || words[0].len() != 16 {
                continue;
            }
            let Ok(loc) = u64::from_str_radix(words[0], 16) else {
                continue;
            };
            let column = |name: &str| columns.iter().position(|c| c == name).map(|i| words[i]);
            let rule = readelf_rule(words[1], column("rbp"), column("ra").unwrap_or("c-8"));
            rows.insert(loc, rule);
        }
        rows
    }

    fn check_against_readelf(path: &str, min_rows: usize) {
        let bytes = std::fs::read(path).expect("read the ELF file");
        let table = build_unwind_table(&bytes).expect("build the table");
        let expected = readelf_rows(path);
        assert!(
            expected.len() >= min_rows,
            "{path}: only {} rows",
            expected.len()
        );
        assert!(table.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        let mut checked = 0;
        for (&loc, &(kind, offset, rbp_offset)) in &expected {
            let row = table
                .row_for(loc)
                .unwrap_or_else(|| panic!("{path}: no row for {loc:#x}"));
            if kind == RowKind::Plt {
                // readelf prints any expression as `exp`: the .plt one becomes a PLT row, any
                // other stops the walk.
                assert!(
                    matches!(row.kind, RowKind::Plt | RowKind::Unsupported),
                    "{path} at {loc:#x}: {row:?}"
                );
                continue;
            }
            assert_eq!(row.kind, kind, "{path} at {loc:#x}: {row:?}");
            if let Some(offset) = offset {
                assert_eq!(row.cfa_offset, offset, "{path} at {loc:#x}: {row:?}");
            }
            if matches!(kind, RowKind::CfaRsp | RowKind::CfaRbp) {
                assert_eq!(row.rbp_offset, rbp_offset, "{path} at {loc:#x}: {row:?}");
            }
            checked += 1;
        }
        eprintln!(
            "{path}: {} rows, {checked} readelf rows agree",
            table.rows.len()
        );
    }

    /// A shared object this test process has mapped, by file name prefix.
    fn mapped_library(prefix: &str) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read maps");
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| {
                p.rsplit('/')
                    .next()
                    .is_some_and(|name| name.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no {prefix} mapped"))
            .to_string()
    }

    #[test]
    fn the_c_library_table_agrees_with_readelf() {
        check_against_readelf(&mapped_library("libc.so"), 1000);
    }

    #[test]
    fn the_dynamic_loader_table_agrees_with_readelf() {
        check_against_readelf(&mapped_library("ld-linux-x86-64"), 100);
    }

    #[test]
    fn a_program_without_frame_pointers_gets_rsp_based_rows_and_a_plt_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path().join("p.c");
        let binary = dir.path().join("p");
        std::fs::write(
            &source,
            "#include <stdio.h>\n__attribute__((noinline)) int f(int x) { printf(\"%d\", x); return x + 1; }\nint main(int c, char **v) { return f(c) * 2; }\n",
        )
        .expect("write source");
        let status = Command::new("cc")
            .args(["-O2", "-fomit-frame-pointer", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .expect("cc runs");
        assert!(status.success());
        let path = binary.to_str().expect("utf-8 path");
        check_against_readelf(path, 5);
        let table = build_unwind_table(&std::fs::read(path).expect("read")).expect("table");
        assert!(
            table.rows.iter().any(|r| r.kind == RowKind::Plt),
            "{table:?}"
        );
        assert!(
            table.rows.iter().all(|r| r.kind != RowKind::CfaRbp),
            "{table:?}"
        );
        // The executable segment maps file offsets to addresses the rows use.
        let text = table.segments.first().expect("an executable segment");
        assert_eq!(table.vaddr_of_offset(text.file_offset), Some(text.vaddr));
    }

    #[test]
    fn files_that_are_no_x86_64_elf_are_refused_with_the_reason() {
        assert_eq!(
            build_unwind_table(b"#!/bin/sh\n"),
            Err(UnwindTableError::NotX86_64Elf("no ELF magic"))
        );
        let mut header = std::fs::read(mapped_library("libc.so")).expect("read libc");
        header[18] = 183; // EM_AARCH64
        assert_eq!(
            build_unwind_table(&header).unwrap_err().to_string(),
            "not a 64-bit x86_64 ELF file: machine is not x86_64"
        );
    }
}
