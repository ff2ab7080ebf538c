//! Places: the hierarchy of places as ltree paths. Labels and ancestry (`hierarchy`), the keys a
//! place is looked up by (`keys`), ltree's in-memory layout (`ltree`), the per-backend resolution
//! cache (`cache`) and the whole hierarchy as one image after a preload (`preloaded`). Depends
//! only on `error` and `cache_stats`.

pub mod cache;
pub mod hierarchy;
pub mod keys;
pub mod ltree;
pub mod preloaded;
