//! jsonb arguments read by pg_ab rather than by pgrx's `JsonB`, which panics (SQLSTATE XX000)
//! on a value serde_json refuses: nesting deeper than serde_json's limit of 128 levels. Here
//! that is a clear error (54000), and any other unreadable value is 22023.

use super::error::raise;
use crate::error::{AbError, Kind};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::prelude::*;
use serde_json::Value;

/// A `jsonb` argument as a serde_json value (numbers kept digit for digit: serde_json's
/// `arbitrary_precision`).
pub struct JsonArg(pub Value);

impl FromDatum for JsonArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // jsonb_out detoasts the value itself and writes it in the database's encoding.
        let text = unsafe { pgrx::direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)]) }?;
        let text = text.to_str().unwrap_or_else(|_| raise(AbError::invalid("a jsonb argument is not valid UTF-8")));
        match serde_json::from_str(text) {
            Ok(v) => Some(JsonArg(v)),
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => raise(
                AbError::new(Kind::TooLarge, "a jsonb argument is nested deeper than 128 levels")
                    .with_hint("entities, metrics and configurations need a few levels; flatten the value"),
            ),
            Err(e) => raise(AbError::invalid(format!("a jsonb argument cannot be read: {e}"))),
        }
    }
}

// As pgrx's own argument types (pgrx::callconv, argue_from_datum!).
unsafe impl<'fcx> ArgAbi<'fcx> for JsonArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(JsonArg, arg_only = "jsonb");
