//! `#[denali::main]`: marks the function a Denali service starts in.
//!
//! The attribute keeps the function as written and adds the symbol the
//! library OS's start-up code calls, so a service needs `#![no_main]` and
//! nothing else.

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// Marks `fn main()` (or any `fn NAME()`) as the service's entry point.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error("#[denali::main] takes no arguments");
    }
    let tokens: Vec<TokenTree> = item.clone().into_iter().collect();
    let name = tokens.windows(2).find_map(|pair| match pair {
        [TokenTree::Ident(kw), TokenTree::Ident(name)] if kw.to_string() == "fn" => Some(name.to_string()),
        _ => None,
    });
    let Some(name) = name else {
        return error("#[denali::main] goes on a function: `fn main() { ... }`");
    };
    let takes_arguments = tokens.iter().any(|t| match t {
        TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis => !g.stream().is_empty(),
        _ => false,
    });
    if takes_arguments {
        return error("the #[denali::main] function takes no arguments; read them with denali::vm::args()");
    }
    let entry = format!(
        "#[doc(hidden)] #[unsafe(export_name = \"__denali_main\")] \
         pub extern \"Rust\" fn __denali_main_entry() {{ {name}() }}"
    );
    let mut out = item;
    out.extend(entry.parse::<TokenStream>().expect("generated entry point parses"));
    out
}

fn error(message: &str) -> TokenStream {
    format!("compile_error!({message:?});").parse().expect("compile_error parses")
}
