//! The drawing of imports: which module of `operator/src` uses which, read from the sources.
//!
//! The reconcile's steps import one another one way only (validate → contract; build_job →
//! validate, contract; status → contract; the controller on top), so each can be read and
//! changed without the others. This test fails on a circle, naming it, and prints the graph:
//!
//! ```sh
//! cargo test -p llmjob-operator --test module_graph -- --nocapture
//! ```
//!
//! An edge `a → b` is a path `crate::b…` in `a.rs` outside `#[cfg(test)]` items: in `use`
//! declarations, in paths and in macro bodies. Doc links make none. Items of the crate root
//! (`lib.rs`, e.g. `FIELD_MANAGER`) are not a module and make no edge; modules that `lib.rs`
//! declares under `#[cfg(test)]` (the test fixtures) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Each module and the modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn parse(path: &Path) -> syn::File {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether the attributes hold `#[cfg(test)]`.
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item;
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The `crate::<name>` references of one file, outside `#[cfg(test)]` items.
#[derive(Default)]
struct CrateRefs {
    names: BTreeSet<String>,
}

impl CrateRefs {
    /// The first names of the paths a use tree below `crate::` imports.
    fn use_tree_below_crate(&mut self, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                self.names.insert(p.ident.to_string());
            }
            syn::UseTree::Name(n) => {
                self.names.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) => {
                self.names.insert(r.ident.to_string());
            }
            syn::UseTree::Glob(_) => {}
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree_below_crate(t)),
        }
    }

    /// `crate :: name` sequences in a macro's tokens.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, token) in tokens.iter().enumerate() {
            match token {
                TokenTree::Ident(ident) if ident == "crate" => {
                    if let [
                        TokenTree::Punct(a),
                        TokenTree::Punct(b),
                        TokenTree::Ident(name),
                        ..,
                    ] = &tokens[i + 1..]
                        && a.as_char() == ':'
                        && b.as_char() == ':'
                    {
                        self.names.insert(name.to_string());
                    }
                }
                TokenTree::Group(group) => self.tokens(group.stream()),
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for CrateRefs {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !is_cfg_test(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        match &u.tree {
            syn::UseTree::Path(p) if p.ident == "crate" => self.use_tree_below_crate(&p.tree),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    if let syn::UseTree::Path(p) = tree
                        && p.ident == "crate"
                    {
                        self.use_tree_below_crate(&p.tree);
                    }
                }
            }
            _ => {}
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next())
            && first.ident == "crate"
        {
            self.names.insert(second.ident.to_string());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

/// The names `source` refers to as `crate::<name>`, outside `#[cfg(test)]` items.
fn crate_refs(source: &syn::File) -> BTreeSet<String> {
    let mut refs = CrateRefs::default();
    refs.visit_file(source);
    refs.names
}

/// The modules `lib.rs` declares (`mod x;`), without those under `#[cfg(test)]`.
fn modules(lib: &syn::File) -> BTreeSet<String> {
    lib.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if !is_cfg_test(&m.attrs) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect()
}

/// The import graph of the operator's modules.
fn operator_graph() -> Graph {
    let src = src_dir();
    let modules = modules(&parse(&src.join("lib.rs")));
    modules
        .iter()
        .map(|module| {
            let file = src.join(format!("{module}.rs"));
            assert!(
                file.is_file(),
                "module {module}: {} is missing (a module in a folder is not read by this test)",
                file.display()
            );
            let uses = crate_refs(&parse(&file))
                .into_iter()
                .filter(|name| name != module && modules.contains(name))
                .collect();
            (module.clone(), uses)
        })
        .collect()
}

/// A circle of `graph`, as its modules with the first repeated at the end, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'g>(
        node: &'g str,
        graph: &'g Graph,
        marks: &mut BTreeMap<&'g str, Mark>,
        path: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::Open);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = path.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|n| n.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node.as_str())
            && let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Each module's level: 0 for one that uses no other module, else one more than the highest
/// level among those it uses. Only for a graph without a circle.
fn levels(graph: &Graph) -> BTreeMap<String, usize> {
    fn level(node: &str, graph: &Graph, memo: &mut BTreeMap<String, usize>) -> usize {
        if let Some(l) = memo.get(node) {
            return *l;
        }
        let l = graph
            .get(node)
            .into_iter()
            .flatten()
            .map(|next| level(next, graph, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(node.to_owned(), l);
        l
    }
    let mut memo = BTreeMap::new();
    for node in graph.keys() {
        level(node, graph, &mut memo);
    }
    memo
}

/// The graph as text, one module a line, those that use nothing first.
fn drawing(graph: &Graph) -> String {
    let levels = levels(graph);
    let mut rows: Vec<(usize, &String)> = graph.keys().map(|m| (levels[m], m)).collect();
    rows.sort();
    let width = graph.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::from("imports of operator/src (a → b: a uses b), lowest level first:\n");
    for (level, module) in rows {
        let uses: Vec<&str> = graph[module].iter().map(String::as_str).collect();
        out.push_str(&format!(
            "  {level:>2}  {module:<width$} → {}\n",
            if uses.is_empty() {
                "-".to_owned()
            } else {
                uses.join(", ")
            }
        ));
    }
    out
}

#[test]
fn operator_modules_import_one_way() {
    let graph = operator_graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import circle in operator/src: {}", cycle.join(" → "));
    }
    println!("{}", drawing(&graph));

    // The graph is read, not empty: the edges the reconcile is made of are in it.
    let uses = |a: &str, b: &str| graph.get(a).is_some_and(|u| u.contains(b));
    for (a, b) in [
        ("controller", "validate"),
        ("controller", "build_job"),
        ("controller", "status"),
        ("build_job", "validate"),
        ("build_job", "contract"),
        ("status", "contract"),
    ] {
        assert!(
            uses(a, b),
            "{a} → {b} is missing from the graph:\n{graph:#?}"
        );
    }
    // The Job contract is a leaf of the steps.
    for step in ["validate", "build_job", "status", "controller"] {
        assert!(!uses("contract", step), "contract must not use {step}");
    }
}

#[test]
fn the_cycle_finder_names_a_circle() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        find_cycle(&graph(&[("x", "y"), ("y", "z"), ("z", "y")])),
        Some(vec!["y".into(), "z".into(), "y".into()])
    );
    assert_eq!(
        find_cycle(&graph(&[("s", "s")])),
        Some(vec!["s".into(), "s".into()])
    );
    let diamond = graph(&[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]);
    assert_eq!(find_cycle(&diamond), None);
    assert_eq!(levels(&diamond)["a"], 2);
    assert_eq!(levels(&diamond)["d"], 0);
}

#[test]
fn references_are_read_from_uses_paths_and_macros_but_not_tests() {
    let source: syn::File = syn::parse_str(
        r#"
        //! Links such as [`crate::doc_only`] are no import.
        use crate::{alpha, beta::Thing, FIELD};
        use std::fmt;
        fn f() -> crate::gamma::T {
            tracing::info!(value = %crate::delta::X, "in a macro");
            crate::epsilon::call()
        }
        impl S {
            #[cfg(test)]
            fn only_in_tests() { crate::zeta::x(); }
        }
        #[cfg(test)]
        mod tests {
            use crate::eta;
        }
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let refs: Vec<String> = crate_refs(&source).into_iter().collect();
    assert_eq!(
        refs,
        ["FIELD", "alpha", "beta", "delta", "epsilon", "gamma"]
    );
}
