//! SQL API of the place hierarchy: labels, ancestor resolution (cached), name resolution, and
//! attaching places to 'where' entities. The ltree-typed wrappers are in sql/hierarchy.sql.

use super::ffi::{finfo_v1, Varlenas, TEXT, TEXT_ARRAY};
use super::json::JsonArg;
use super::error::{raise, require_primary, required, OrRaise};
use super::{cache, hierarchy_cache, store};
use crate::places::cache::NodeRef;
use crate::extraction::entities::{self, Entity};
use crate::error::AbError;
use crate::places::hierarchy::{self, Node};
use crate::places::keys;
use crate::places::ltree::Ltree;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};


/// Normalised keys a place is found by: its name's and each alias's (`places::keys::place_keys`);
/// fills `ab.hierarchy.lookup_keys`.
#[pg_extern(immutable, parallel_safe)]
pub fn place_keys(name: Option<&str>, aliases: default!(Option<Vec<Option<String>>>, "'{}'")) -> Vec<String> {
    let aliases = aliases.unwrap_or_default();
    keys::place_keys(name, aliases.iter().flatten().map(String::as_str))
}

/// The ltree label for a place name (README, "Hierarchy"); `fallback` when the name has no
/// Latin letters or digits.
#[pg_extern(immutable, parallel_safe)]
fn place_label(name: Option<&str>, fallback: default!(Option<&str>, "NULL")) -> String {
    hierarchy::label(required(name, "name"), fallback).or_raise()
}

fn load_nodes(prefixes: &[&str]) -> Vec<Node> {
    let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
    store::kept_rows(
        "SELECT path::text, name, kind FROM ab.hierarchy WHERE path = ANY($1::ltree[])",
        &[TEXT_ARRAY],
        &[prefixes.into()],
        |row| {
            Ok(Node {
                path: row.get::<String>(1)?.unwrap_or_default(),
                name: row.get::<String>(2)?.unwrap_or_default(),
                kind: row.get::<String>(3)?.unwrap_or_default(),
            })
        },
    )
}

fn load_all_nodes() -> Vec<Node> {
    Spi::connect(|c| {
        // Byte order, which the preloaded cache is built in (a sort here is cheaper than one on
        // strings spread over the backend's heap).
        c.select("SELECT path::text, name, kind FROM ab.hierarchy ORDER BY path::text COLLATE \"C\"", None, &[])?
            .map(|row| {
                Ok(Node {
                    path: row.get::<String>(1)?.unwrap_or_default(),
                    name: row.get::<String>(2)?.unwrap_or_default(),
                    kind: row.get::<String>(3)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .or_raise()
}

/// Loads the whole hierarchy into this backend's resolution cache; returns the nodes cached,
/// whether all of them fit (then every resolution is served from memory until the hierarchy
/// changes) and whether that memory is an image shared with the other backends.
/// pg_ab.hierarchy_preload does the same at a backend's first resolution.
#[pg_extern(volatile, parallel_restricted)]
fn preload_hierarchy() -> TableIterator<'static, (name!(nodes, i64), name!(complete, bool), name!(shared, bool))> {
    cache::accept_invalidations();
    let (n, complete, shared) = hierarchy_cache::preload_hierarchy(load_all_nodes);
    TableIterator::once((n as i64, complete, shared))
}

/// Runs `f` on the chain of a path known to be well-formed; an unknown path is an error.
fn with_chain_of<R>(path: &str, f: impl FnOnce(&[NodeRef]) -> R) -> R {
    cache::accept_invalidations();
    hierarchy_cache::with_hierarchy_chain(path, load_nodes, load_all_nodes, |chain| {
        if chain.last().is_none_or(|n| n.path != path) {
            raise(AbError::undefined(format!("\"{path}\" is not in ab.hierarchy")));
        }
        f(chain)
    })
}

finfo_v1!(pg_finfo_resolve_ancestors_ltree, pg_finfo_resolve_ancestors_many_ltree);

/// `ab.resolve_ancestors(path ltree)` (declared in sql/hierarchy.sql): the node and its
/// ancestors, root first, from the backend's cache. A C-level function rather than a pgrx one:
/// it reads the ltree argument in place and returns each ancestor as a prefix of the same bytes,
/// with the rows put straight into the executor's tuplestore, so a cached resolution costs no
/// text conversion, no SQL wrapper and no per-row call.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn resolve_ancestors_ltree(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let arg = required(unsafe { pgrx::fcinfo::pg_getarg_datum(fcinfo, 0) }, "path");
    let rows = unsafe { Rows::begin(fcinfo) };
    let value = unsafe { pg_sys::pg_detoast_datum(arg.cast_mut_ptr()) };
    resolve_into(&rows, value, None);
    pg_sys::Datum::from(0)
}

/// `ab.resolve_ancestors_many(paths ltree[])`: the chains of every path of the array in one
/// call (one function scan for a request's paths, not one per path), each row with the
/// position of its path in the array, from 1.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn resolve_ancestors_many_ltree(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let arg = required(unsafe { pgrx::fcinfo::pg_getarg_datum(fcinfo, 0) }, "paths");
    let rows = unsafe { Rows::begin(fcinfo) };
    let array = unsafe { pg_sys::pg_detoast_datum(arg.cast_mut_ptr()) } as *mut pg_sys::ArrayType;
    let (mut len, mut by_value, mut align) = (0i16, false, 0 as std::ffi::c_char);
    let (mut values, mut nulls, mut count) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
    unsafe {
        let element = (*array).elemtype;
        pg_sys::get_typlenbyvalalign(element, &mut len, &mut by_value, &mut align);
        pg_sys::deconstruct_array(array, element, len as i32, by_value, align, &mut values, &mut nulls, &mut count);
    }
    for i in 0..count.max(0) as usize {
        if unsafe { *nulls.add(i) } {
            required(None::<()>, &format!("element {} of paths", i + 1));
        }
        let value = unsafe { pg_sys::pg_detoast_datum((*values.add(i)).cast_mut_ptr()) };
        resolve_into(&rows, value, Some(i as i32 + 1));
    }
    pg_sys::Datum::from(0)
}

/// Resolves the ltree `value` (detoasted) and puts its chain into `rows`.
fn resolve_into(rows: &Rows, value: *mut pg_sys::varlena, position: Option<i32>) {
    let bytes = unsafe { std::slice::from_raw_parts(value as *const u8, pgrx::varlena::varsize_any(value)) };
    let path = Ltree::parse(bytes).or_raise();
    with_chain_of(&path.path(), |chain| rows.put(&path, chain, position));
}

/// The result rows of a set-returning call, put straight into the executor's tuplestore.
struct Rows {
    rsinfo: *mut pg_sys::ReturnSetInfo,
}

impl Rows {
    /// # Safety
    /// `fcinfo` is the valid call info of a set-returning call.
    unsafe fn begin(fcinfo: pg_sys::FunctionCallInfo) -> Rows {
        let rsinfo = unsafe { (*fcinfo).resultinfo } as *mut pg_sys::ReturnSetInfo;
        // The executor's expected row type, when it passes one, saves building it from pg_proc.
        let expected = !rsinfo.is_null()
            && unsafe { (*rsinfo).type_ } == pg_sys::NodeTag::T_ReturnSetInfo
            && !unsafe { (*rsinfo).expectedDesc }.is_null();
        unsafe { pg_sys::InitMaterializedSRF(fcinfo, if expected { pg_sys::MAT_SRF_USE_EXPECTED_DESC as _ } else { 0 }) };
        Rows { rsinfo }
    }

    /// The chain as rows (the path's position first, if given): each path a prefix of
    /// `path`'s bytes. The chain's values share one buffer, not three allocations per row
    /// (tuplestore_putvalues copies them anyway).
    fn put(&self, path: &Ltree, chain: &[NodeRef], position: Option<i32>) {
        let size = |n: &NodeRef| (path.prefix_size(n.depth) + 2 * pg_sys::VARHDRSZ + n.name.len() + n.kind.len()).next_multiple_of(8) + 16;
        let mut buffer = Varlenas::with_capacity(chain.iter().map(size).sum());
        let offsets: Vec<[usize; 3]> = chain
            .iter()
            .map(|node| {
                let prefix = buffer.push(path.prefix_size(node.depth), |out| path.write_prefix(node.depth, out));
                [prefix, buffer.push_str(node.name), buffer.push_str(node.kind)]
            })
            .collect();
        for (node, [prefix, name, kind]) in chain.iter().zip(offsets) {
            let depth = node.depth;
            let (prefix, name, kind) = (buffer.datum(prefix), buffer.datum(name), buffer.datum(kind));
            let mut values = [pg_sys::Datum::from(position.unwrap_or(0)), prefix, name, kind, pg_sys::Datum::from(depth as i32)];
            let mut nulls = [false; 5];
            let columns = &mut values[if position.is_some() { 0 } else { 1 }..];
            unsafe {
                pg_sys::tuplestore_putvalues((*self.rsinfo).setResult, (*self.rsinfo).setDesc, columns.as_mut_ptr(), nulls.as_mut_ptr())
            };
        }
    }
}

#[derive(serde::Deserialize)]
struct Match {
    path: String,
    name: String,
    kind: String,
    depth: i32,
    matched: String,
}

/// Nodes whose name or alias matches (normalised, case-insensitive): name matches first, then
/// alias matches; within each, shallower nodes first, then larger population, then path.
fn matches(name: &str) -> Vec<Match> {
    let key = keys::place_key(name);
    if key.is_empty() {
        return vec![];
    }
    let rows = store::kept_json(
        include_str!("queries/places_named.sql"),
        &[TEXT],
        false,
        &[key.into()],
    );
    store::deserialize(rows.unwrap_or(json!([])), "hierarchy matches")
}

#[pg_extern(stable, parallel_safe)]
fn _resolve_name(
    name: Option<&str>,
) -> TableIterator<
    'static,
    (name!(path, String), name!(name, String), name!(kind, String), name!(depth, i32), name!(matched, String)),
> {
    TableIterator::new(
        matches(required(name, "name")).into_iter().map(|m| (m.path, m.name, m.kind, m.depth, m.matched)).collect::<Vec<_>>(),
    )
}

/// Adds a place under `parent_path` (NULL for a root); its label comes from the name unless
/// given. Returns the new path.
#[pg_extern(volatile, parallel_unsafe)]
fn add_place(
    parent_path: Option<&str>,
    name: Option<&str>,
    kind: default!(Option<&str>, "'place'"),
    aliases: default!(Option<Vec<Option<String>>>, "'{}'"),
    attributes: default!(Option<JsonArg>, "'{}'"),
    label: default!(Option<&str>, "NULL"),
) -> String {
    require_primary("ab.add_place");
    let name = required(name, "name");
    let path = hierarchy::new_place_path(parent_path, name, label).or_raise();
    if let Some(parent) = parent_path {
        with_chain_of(parent, |_| ()); // the parent must exist
    }
    let attributes = attributes.map(|a| a.0).unwrap_or(json!({}));
    if !attributes.is_object() {
        raise(AbError::invalid("attributes must be a JSON object"));
    }
    let inserted = store::json_one(
        "INSERT INTO ab.hierarchy (path, name, kind, aliases, attributes) VALUES ($1::ltree, $2, $3, $4, $5)
         ON CONFLICT (path) DO NOTHING RETURNING to_jsonb(path::text)",
        &[
            path.as_str().into(),
            name.into(),
            kind.unwrap_or("place").into(),
            aliases.unwrap_or_default().into_iter().flatten().collect::<Vec<String>>().into(),
            JsonB(attributes).into(),
        ],
    );
    if inserted.is_none() {
        raise(AbError::new(crate::error::Kind::Duplicate, format!("\"{path}\" is already in ab.hierarchy"))
            .with_hint("give the place another label with the label argument"));
    }
    path
}

/// Attaches the best-matching place to every 'where' entity: `metadata.hierarchy_path` and
/// `metadata.ancestors` (root first, each {path, name, kind}). Entities that match no place
/// are left as they are.
#[pg_extern(stable, parallel_safe)]
fn apply_hierarchy(entities: Option<JsonArg>) -> JsonB {
    let mut es: Vec<Entity> = entities::parse(&required(entities, "entities").0).or_raise();
    for e in es.iter_mut() {
        if entities::five_w_of(e) != "where" {
            continue;
        }
        let Some(best) = matches(entities::text_of(e)).into_iter().next() else { continue };
        hierarchy_cache::with_hierarchy_chain(&best.path, load_nodes, load_all_nodes, |chain| {
            let above = chain.iter().filter(|n| n.path != best.path).map(|n| (n.path, n.name, n.kind));
            entities::set_place(e, &best.path, &best.kind, above);
        });
    }
    JsonB(Value::Array(es.into_iter().map(Value::Object).collect()))
}
