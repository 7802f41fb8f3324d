//! `cargo denali new`: a service from a template in `templates/`.

use crate::paths;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// A template: (path in the new crate, contents with `{{name}}` and
/// `{{denali_path}}` placeholders).
type Template = &'static [(&'static str, &'static str)];

/// Every template's `Cargo.toml` and `.gitignore`.
const CARGO_TOML: (&str, &str) = ("Cargo.toml", include_str!("../../templates/hello/Cargo.toml.in"));
const GITIGNORE: (&str, &str) = (".gitignore", include_str!("../../templates/hello/gitignore"));

const HELLO: Template = &[CARGO_TOML, GITIGNORE, ("src/main.rs", include_str!("../../templates/hello/src/main.rs"))];

const HTTP: Template = &[
    CARGO_TOML,
    GITIGNORE,
    ("src/main.rs", include_str!("../../templates/http/src/main.rs")),
    ("Denali.toml", include_str!("../../templates/http/Denali.toml")),
];

const ECHO: Template = &[
    CARGO_TOML,
    GITIGNORE,
    ("src/main.rs", include_str!("../../templates/echo/src/main.rs")),
    ("Denali.toml", include_str!("../../templates/echo/Denali.toml")),
];

const DISK: Template = &[
    CARGO_TOML,
    GITIGNORE,
    ("src/main.rs", include_str!("../../templates/disk/src/main.rs")),
    ("Denali.toml", include_str!("../../templates/disk/Denali.toml")),
];

const STD: Template = &[
    CARGO_TOML,
    GITIGNORE,
    ("src/main.rs", include_str!("../../templates/std/src/main.rs")),
    ("Denali.toml", include_str!("../../templates/std/Denali.toml")),
];

/// axum on tokio: a Cargo.toml of its own (the web stack's crates).
const AXUM: Template = &[
    ("Cargo.toml", include_str!("../../templates/axum/Cargo.toml.in")),
    GITIGNORE,
    ("src/main.rs", include_str!("../../templates/axum/src/main.rs")),
    ("Denali.toml", include_str!("../../templates/axum/Denali.toml")),
];

/// Template names and their files.
pub const TEMPLATES: &[(&str, Template)] =
    &[("hello", HELLO), ("http", HTTP), ("echo", ECHO), ("disk", DISK), ("std", STD), ("axum", AXUM)];

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Creates the service `name` in `parent/name` from `template`.
pub fn new(parent: &Path, name: &str, template: &str) -> Result<PathBuf> {
    if !valid_name(name) {
        bail!("`{name}` is not a valid service name\nhint: use letters, digits, `-` and `_`, starting with a letter");
    }
    let Some((_, files)) = TEMPLATES.iter().find(|(t, _)| *t == template) else {
        let names: Vec<_> = TEMPLATES.iter().map(|(t, _)| *t).collect();
        bail!("there is no template `{template}`\nhint: the templates are: {}", names.join(", "));
    };
    let dir = parent.join(name);
    if dir.exists() {
        bail!("destination `{}` already exists\nhint: choose another name or remove it", dir.display());
    }
    let libos = paths::libos();
    let libos = libos.canonicalize().unwrap_or(libos);
    for (path, contents) in files.iter() {
        let file = dir.join(path);
        let parent = file.parent().expect("template paths have a parent");
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let text = contents.replace("{{name}}", name).replace("{{denali_path}}", &libos.to_string_lossy());
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("hello"));
        assert!(valid_name("web-2_x"));
        assert!(!valid_name("2web"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn an_existing_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("denali-new-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("taken")).unwrap();
        let err = new(&dir, "taken", "hello").unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let made = new(&dir, "fresh", "hello").unwrap();
        let manifest = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"fresh\"") && !manifest.contains("{{"), "{manifest}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
