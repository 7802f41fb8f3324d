//! Names, files and lines for a VM's code addresses, from the image's ELF
//! (kept beside the `.dvm` by `cargo denali build`): its DWARF line tables
//! and inlining records through `addr2line`, else its symbol table.
//!
//! The ELF is read whole into memory and nothing else is opened: an ELF
//! can name other files (split DWARF's `.dwo` files, a `.dwp`), and one
//! that came with a prebuilt image must not make the monitor open, and
//! perhaps block on, a path of its choosing. Rust's builds keep their DWARF
//! in the ELF itself.

use object::read::{SymbolMap, SymbolMapEntry};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

/// A section of the ELF as `addr2line` reads it: owned, shareable.
type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// One source-level frame at a code address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFrame {
    /// The function, demangled; `None` if nothing names it.
    pub function: Option<String>,
    /// `file:line[:column]`, if the line tables say.
    pub location: Option<String>,
    /// Inlined into the frame after it (same address).
    pub inlined: bool,
}

/// A function of the symbol table: where it starts, its size (0 if the
/// table does not say), and its name.
struct Function {
    start: u64,
    size: u64,
    name: String,
}

impl SymbolMapEntry for Function {
    fn address(&self) -> u64 {
        self.start
    }
}

/// An ELF's debugging information, loaded once.
pub struct Symbols {
    lines: addr2line::Context<Reader>,
    functions: SymbolMap<Function>,
}

impl Symbols {
    /// Loads `elf`; the error says why it cannot be used.
    pub fn load(elf: &Path) -> Result<Symbols, String> {
        let data = std::fs::read(elf).map_err(|e| e.to_string())?;
        Symbols::parse(&data)
    }

    /// The debugging information of the ELF `data`.
    fn parse(data: &[u8]) -> Result<Symbols, String> {
        let object = object::File::parse(data).map_err(|e| format!("not an ELF file we can read ({e})"))?;
        let endian = if object.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
        let section = |id: gimli::SectionId| -> Result<Reader, String> {
            let bytes = match object.section_by_name(id.name()) {
                Some(section) => {
                    section.uncompressed_data().map_err(|e| format!("its {} cannot be read ({e})", id.name()))?
                }
                None => Cow::Borrowed(&[][..]),
            };
            Ok(gimli::EndianArcSlice::new(Arc::from(&*bytes), endian))
        };
        let dwarf = gimli::Dwarf::load(section)?;
        let lines = addr2line::Context::from_dwarf(dwarf).map_err(|e| format!("its DWARF cannot be read ({e})"))?;
        Ok(Symbols { lines, functions: SymbolMap::new(functions(&object)) })
    }

    /// The frames at `pc`, innermost first: the inlined calls there, then
    /// the function that holds them. Empty if nothing is known of `pc`.
    pub fn frames_at(&self, pc: u64) -> Vec<SourceFrame> {
        let mut frames = Vec::new();
        // Split DWARF would be in other files: never looked for.
        if let Ok(mut iter) = self.lines.find_frames(pc).skip_all_loads() {
            while let Ok(Some(frame)) = iter.next() {
                let function = frame.function.as_ref().and_then(|f| f.demangle().ok()).map(Cow::into_owned);
                let location = frame.location.as_ref().and_then(describe_location);
                frames.push(SourceFrame { function, location, inlined: true });
            }
        }
        if let Some(last) = frames.last_mut() {
            last.inlined = false;
            if last.function.is_none() {
                last.function = self.symbol_at(pc);
            }
        } else if let Some(function) = self.symbol_at(pc) {
            frames.push(SourceFrame { function: Some(function), location: None, inlined: false });
        }
        frames
    }

    /// The symbol-table name around `pc`, demangled.
    fn symbol_at(&self, pc: u64) -> Option<String> {
        let function = self.functions.get(pc).filter(|f| f.size == 0 || pc - f.start < f.size)?;
        Some(addr2line::demangle_auto(Cow::Borrowed(&function.name), None).into_owned())
    }
}

/// The functions (and code labels) `object` defines, one per address: a
/// global name rather than a local alias.
fn functions(object: &object::File<'_>) -> Vec<Function> {
    let mut functions: Vec<(bool, Function)> = object
        .symbols()
        .filter(|symbol| matches!(symbol.kind(), SymbolKind::Text | SymbolKind::Unknown) && symbol.is_definition())
        .filter_map(|symbol| {
            let name = symbol.name().ok().filter(|name| !name.is_empty())?.to_string();
            Some((symbol.is_global(), Function { start: symbol.address(), size: symbol.size(), name }))
        })
        .collect();
    functions.sort_by_key(|(global, function)| (function.start, !global));
    functions.dedup_by_key(|(_, function)| function.start);
    functions.into_iter().map(|(_, function)| function).collect()
}

/// Where the toolchain keeps the standard library's source: shown from
/// `library/` on.
const RUST_SOURCE: &str = "/lib/rustlib/src/rust/";

/// `file:line[:column]`, the file relative to the current directory when
/// it lies below it, and the standard library's from `library/`.
fn describe_location(location: &addr2line::Location<'_>) -> Option<String> {
    let file = location.file?;
    let here = std::env::current_dir().ok();
    let relative = here.as_deref().and_then(|dir| Path::new(file).strip_prefix(dir).ok());
    let shown = match (relative, file.find(RUST_SOURCE)) {
        (Some(relative), _) => Cow::Owned(relative.display().to_string()),
        (None, Some(at)) => Cow::Borrowed(&file[at + RUST_SOURCE.len()..]),
        (None, None) => Cow::Borrowed(file),
    };
    Some(match (location.line, location.column) {
        (Some(line), Some(column)) if column > 0 => format!("{shown}:{line}:{column}"),
        (Some(line), _) => format!("{shown}:{line}"),
        _ => shown.into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_marked_function(value: u64) -> u64 {
        std::hint::black_box(value) * 3
    }

    #[test]
    fn names_and_lines_come_from_the_elf_alone() {
        assert_eq!(a_marked_function(2), 6);
        // This test's own executable, built with line tables.
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let object = object::File::parse(&*data).unwrap();
        let marked = object.symbols().find(|s| s.name().is_ok_and(|n| n.contains("a_marked_function"))).unwrap();

        let symbols = Symbols::load(&exe).unwrap();
        let frames = symbols.frames_at(marked.address());
        let outer = frames.last().expect("a frame");
        assert!(outer.function.as_deref().is_some_and(|f| f.ends_with("::a_marked_function")), "{frames:?}");
        assert!(outer.location.as_deref().is_some_and(|l| l.contains("symbols.rs:")), "{frames:?}");
        let name = symbols.symbol_at(marked.address() + 1);
        assert!(name.is_some_and(|f| f.ends_with("::a_marked_function")));
    }

    #[test]
    fn a_file_that_is_not_an_elf_says_so() {
        let error = Symbols::parse(b"#!/bin/sh\n").err().unwrap();
        assert!(error.starts_with("not an ELF file we can read"), "{error}");
    }
}
