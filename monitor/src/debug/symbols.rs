//! Names, files and lines for a VM's code addresses, from the image's ELF
//! (kept beside the `.dvm` by `cargo denali build`): its DWARF line tables
//! and inlining records through `addr2line`, else its symbol table.

use std::borrow::Cow;
use std::path::Path;

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

/// An ELF's debugging information, loaded once.
pub struct Symbols(addr2line::Loader);

impl Symbols {
    /// Loads `elf`; the error says why it cannot be used.
    pub fn load(elf: &Path) -> Result<Symbols, String> {
        addr2line::Loader::new(elf).map(Symbols).map_err(|e| e.to_string())
    }

    /// The frames at `pc`, innermost first: the inlined calls there, then
    /// the function that holds them. Empty if nothing is known of `pc`.
    pub fn frames_at(&self, pc: u64) -> Vec<SourceFrame> {
        let mut frames = Vec::new();
        if let Ok(mut iter) = self.0.find_frames(pc) {
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
        let name = self.0.find_symbol(pc)?;
        Some(addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned())
    }
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
