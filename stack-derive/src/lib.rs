//! `#[derive(Resource)]`: a stack resource type declared where its fields are.
//!
//! ```text
//! #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
//! #[resource(kind = "aws:apigatewayv2:Api")]
//! pub struct Api {
//!     #[resource(len = 1..=128)]
//!     pub name: String,
//!     #[resource(replace, one_of("HTTP", "WEBSOCKET"))]
//!     pub protocol_type: String,
//!     #[serde(default)]
//!     pub tags: Tags,
//! }
//! ```
//!
//! implements `stack::engine::Resource` for `Api`:
//!
//! - `KIND` from `kind = "..."`;
//! - `TAGGABLE` when the struct has a `tags` field (the field the engine adds the
//!   stack's tags to);
//! - `REPLACE_PATHS`: the fields marked `replace`, in declaration order (the provider
//!   registry checks each names a serialized field);
//! - `validate`: one `stack::providers::Checks` call per field rule, in field order,
//!   then the container's `checks = path` hook, a `fn(&Self, Checks) -> Checks` for
//!   what is not one field's rule (cross-field constraints, CIDR syntax).
//!
//! Field rules, each the `Checks` method of the same name with the field's name (or
//! `label = "..."`) and value:
//!
//! | attribute | call |
//! | --- | --- |
//! | `len = 1..=128` | `.len("name", &self.name, 1..=128)` |
//! | `chars(1..=64, Charset::WORD)` | `.chars("name", &self.name, 1..=64, Charset::WORD)` |
//! | `word(Charset::WORD)` | `.word("name", &self.name, Charset::WORD)` |
//! | `non_empty` | `.non_empty("name", &self.name)` |
//! | `one_of("A", "B")` | `.one_of("name", &self.name, &["A", "B"])` |
//! | `within = 1..=900` | `.within("name", self.name, 1..=900)` |
//!
//! The generated code names `::stack`, so it compiles in the `stack` crate (which
//! declares `extern crate self as stack`) and in crates depending on it.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::quote;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::{Data, DeriveInput, Error, Expr, Fields, Ident, LitStr, Path, Result, Token};

/// Derives `stack::engine::Resource`; see the crate docs for the attributes.
#[proc_macro_derive(Resource, attributes(resource))]
pub fn derive_resource(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// One field rule: a `Checks` method and its arguments after the field's value.
enum Rule {
    Len(Expr),
    Chars(Expr, Expr),
    Word(Expr),
    NonEmpty,
    OneOf(Vec<LitStr>),
    Within(Expr),
}

impl Rule {
    /// The chained `Checks` call for field `f` named `label` in messages.
    fn call(&self, label: &str, f: &Ident) -> Tokens {
        match self {
            Rule::Len(len) => quote!(.len(#label, &self.#f, #len)),
            Rule::Chars(len, set) => quote!(.chars(#label, &self.#f, #len, #set)),
            Rule::Word(set) => quote!(.word(#label, &self.#f, #set)),
            Rule::NonEmpty => quote!(.non_empty(#label, &self.#f)),
            Rule::OneOf(allowed) => quote!(.one_of(#label, &self.#f, &[#(#allowed),*])),
            Rule::Within(range) => quote!(.within(#label, self.#f, #range)),
        }
    }
}

/// What a field's `#[resource(...)]` attributes say.
#[derive(Default)]
struct FieldAttrs {
    replace: bool,
    label: Option<LitStr>,
    rules: Vec<Rule>,
}

impl FieldAttrs {
    fn parse(&mut self, meta: ParseNestedMeta) -> Result<()> {
        let is = |name: &str| meta.path.is_ident(name);
        if is("replace") {
            self.replace = true;
        } else if is("label") {
            set_once(&mut self.label, &meta, meta.value()?.parse()?)?;
        } else if is("len") {
            self.rules.push(Rule::Len(meta.value()?.parse()?));
        } else if is("within") {
            self.rules.push(Rule::Within(meta.value()?.parse()?));
        } else if is("non_empty") {
            self.rules.push(Rule::NonEmpty);
        } else if is("word") {
            let args = parenthesized(&meta)?;
            self.rules.push(Rule::Word(args.parse()?));
        } else if is("chars") {
            let args = parenthesized(&meta)?;
            let len = args.parse()?;
            args.parse::<Token![,]>()?;
            self.rules.push(Rule::Chars(len, args.parse()?));
        } else if is("one_of") {
            let args = parenthesized(&meta)?;
            let allowed = args.parse_terminated(|s| s.parse::<LitStr>(), Token![,])?;
            self.rules.push(Rule::OneOf(allowed.into_iter().collect()));
        } else {
            return Err(meta.error(
                "unknown field attribute; expected replace, label = \"..\", len = a..=b, \
                 chars(a..=b, CHARSET), word(CHARSET), non_empty, one_of(\"A\", ..) \
                 or within = a..=b",
            ));
        }
        Ok(())
    }
}

/// The contents of `name(...)`.
fn parenthesized<'a>(meta: &ParseNestedMeta<'a>) -> Result<syn::parse::ParseBuffer<'a>> {
    let content;
    syn::parenthesized!(content in meta.input);
    Ok(content)
}

/// Sets an attribute that may be given once.
fn set_once<T>(slot: &mut Option<T>, meta: &ParseNestedMeta, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(meta.error("given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn expand(input: &DeriveInput) -> Result<Tokens> {
    let not_named = || {
        Error::new_spanned(
            &input.ident,
            "#[derive(Resource)] is for structs with named fields",
        )
    };
    let Data::Struct(data) = &input.data else {
        return Err(not_named());
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(not_named());
    };

    let (mut kind, mut hook) = (None::<LitStr>, None::<Path>);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("resource")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("kind") {
                set_once(&mut kind, &meta, meta.value()?.parse()?)
            } else if meta.path.is_ident("checks") {
                set_once(&mut hook, &meta, meta.value()?.parse()?)
            } else {
                Err(meta
                    .error("unknown resource attribute; expected kind = \"..\" or checks = path"))
            }
        })?;
    }
    let kind = kind.ok_or_else(|| {
        Error::new(
            Span::call_site(),
            "#[derive(Resource)] needs #[resource(kind = \"service:Type\")]",
        )
    })?;

    let (mut taggable, mut replace, mut checks) = (false, vec![], vec![]);
    for f in &fields.named {
        let Some(ident) = &f.ident else { continue };
        let name = ident.unraw().to_string();
        taggable |= name == "tags";
        let mut a = FieldAttrs::default();
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("resource")) {
            attr.parse_nested_meta(|meta| a.parse(meta))?;
        }
        let label = a.label.map_or_else(|| name.clone(), |l| l.value());
        checks.extend(a.rules.iter().map(|r| r.call(&label, ident)));
        if a.replace {
            replace.push(name);
        }
    }

    let validate = match (&hook, checks.is_empty()) {
        (None, true) => quote!(),
        (None, false) => quote! {
            fn validate(&self) -> ::std::vec::Vec<::std::string::String> {
                ::stack::providers::Checks::new() #(#checks)* .done()
            }
        },
        (Some(hook), _) => quote! {
            fn validate(&self) -> ::std::vec::Vec<::std::string::String> {
                #hook(self, ::stack::providers::Checks::new() #(#checks)*).done()
            }
        },
    };
    let ty = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::stack::engine::Resource for #ty #ty_generics #where_clause {
            const KIND: &'static str = #kind;
            const TAGGABLE: bool = #taggable;
            const REPLACE_PATHS: &'static [&'static str] = &[#(#replace),*];
            #validate
        }
    })
}
