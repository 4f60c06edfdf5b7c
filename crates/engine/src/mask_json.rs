//! Masking while serialising: the remote copy of a frame is written from the typed value with
//! every string passed through the [`Masker`] on the way, so no frame is ever parsed back to be
//! masked. [`to_json_pair`] returns the host's copy and the remotes' copy; when nothing needed
//! masking (almost always) they are the same allocation and the value was serialised once.
//!
//! A thin [`serde::Serializer`] wrapper: strings are masked, everything else (numbers, map keys,
//! enum tags, field names) goes to the inner serializer unchanged.

use super::mask::Masker;
use serde::ser::{self, Serialize, Serializer};
use std::cell::Cell;
use std::sync::Arc;

/// What masking needs while serialising.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    masker: &'a Masker,
    changed: &'a Cell<bool>,
}

/// A value serialised with its strings masked.
struct Masked<'a, T: ?Sized> {
    value: &'a T,
    ctx: Ctx<'a>,
}

impl<T: Serialize + ?Sized> Serialize for Masked<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(MaskSer { inner: serializer, ctx: self.ctx })
    }
}

struct MaskSer<'a, S> {
    inner: S,
    ctx: Ctx<'a>,
}

/// A compound (sequence, map, struct…) whose elements are masked.
struct Compound<'a, C> {
    inner: C,
    ctx: Ctx<'a>,
}

macro_rules! forward {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<S::Ok, S::Error> { self.inner.$method(v) })*
    };
}

impl<'a, S: Serializer> Serializer for MaskSer<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
    );

    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        let masked = self.ctx.masker.mask(v);
        if masked != v {
            self.ctx.changed.set(true);
        }
        self.inner.serialize_str(&masked)
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(&Masked { value, ctx: self.ctx })
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_struct(name)
    }

    fn serialize_unit_variant(self, name: &'static str, index: u32, variant: &'static str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_struct(name, &Masked { value, ctx: self.ctx })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_variant(name, index, variant, &Masked { value, ctx: self.ctx })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Ok(Compound { inner: self.inner.serialize_seq(len)?, ctx: self.ctx })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        Ok(Compound { inner: self.inner.serialize_tuple(len)?, ctx: self.ctx })
    }

    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeTupleStruct, S::Error> {
        Ok(Compound { inner: self.inner.serialize_tuple_struct(name, len)?, ctx: self.ctx })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Ok(Compound { inner: self.inner.serialize_tuple_variant(name, index, variant, len)?, ctx: self.ctx })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Ok(Compound { inner: self.inner.serialize_map(len)?, ctx: self.ctx })
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeStruct, S::Error> {
        Ok(Compound { inner: self.inner.serialize_struct(name, len)?, ctx: self.ctx })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Ok(Compound { inner: self.inner.serialize_struct_variant(name, index, variant, len)?, ctx: self.ctx })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The compounds whose one method takes a value: each value is masked on its way in.
macro_rules! masked_compound {
    ($($trait:ident::$method:ident),* $(,)?) => {
        $(impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                let ctx = self.ctx;
                self.inner.$method(&Masked { value, ctx })
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        })*
    };
}

masked_compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    /// Keys are names, not text: passed through.
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.inner.serialize_key(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let ctx = self.ctx;
        self.inner.serialize_value(&Masked { value, ctx })
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

/// The compounds whose fields are named: each value is masked, the name passes through.
macro_rules! masked_named_compound {
    ($($trait:ident),* $(,)?) => {
        $(impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), C::Error> {
                let ctx = self.ctx;
                self.inner.serialize_field(key, &Masked { value, ctx })
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        })*
    };
}

masked_named_compound!(SerializeStruct, SerializeStructVariant);

/// `value` as JSON with every string masked, and whether anything was masked.
pub fn to_json_masked<T: Serialize + ?Sized>(value: &T, masker: &Masker) -> (String, bool) {
    let changed = Cell::new(false);
    let mut out = Vec::with_capacity(128);
    let mut json = serde_json::Serializer::new(&mut out);
    value
        .serialize(MaskSer { inner: &mut json, ctx: Ctx { masker, changed: &changed } })
        .expect("serialising to a Vec cannot fail");
    (String::from_utf8(out).expect("serde_json writes UTF-8"), changed.get())
}

/// A stored frame (the host's copy) with its remotes' copy: parsed and masked once, at start-up
/// (a frame the host made is never parsed again).
pub fn framed_from_stored(host: Arc<str>, masker: &Masker) -> crate::io::Framed {
    match serde_json::from_str::<serde_json::Value>(&host) {
        Ok(value) => {
            let (masked, changed) = to_json_masked(&value, masker);
            let remote = if changed { Arc::from(masked) } else { host.clone() };
            crate::io::Framed { host, remote }
        }
        // Not JSON (cannot happen for frames the host wrote): nothing to mask in it.
        Err(_) => crate::io::Framed::same(host),
    }
}

/// The host's copy and the remotes' copy of `value` as JSON frames: one allocation shared by
/// both when nothing needed masking.
pub fn to_json_pair<T: Serialize + ?Sized>(value: &T, masker: &Masker) -> (Arc<str>, Arc<str>) {
    let (masked, changed) = to_json_masked(value, masker);
    let remote: Arc<str> = Arc::from(masked);
    if !changed {
        return (remote.clone(), remote);
    }
    let host: Arc<str> = Arc::from(serde_json::to_string(value).expect("serialising to a String cannot fail"));
    (host, remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn walk_mask(v: &mut serde_json::Value, m: &Masker) {
        match v {
            serde_json::Value::String(s) => *s = m.mask(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk_mask(x, m)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| walk_mask(x, m)),
            _ => {}
        }
    }

    #[test]
    fn nothing_to_mask_is_one_allocation_and_the_plain_json() {
        let m = Masker::default();
        let v = serde_json::json!({"a": [1, "two", {"b": null}], "c": "hello"});
        let (host, remote) = to_json_pair(&v, &m);
        assert!(Arc::ptr_eq(&host, &remote));
        assert_eq!(&*host, v.to_string());
    }

    #[test]
    fn secrets_are_masked_in_every_string_but_not_in_keys_or_the_host_copy() {
        let m = Masker::default();
        let key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789";
        let v = serde_json::json!({"text": format!("key {key}"), "list": [key], "nested": {"x": Some(key)}});
        let (host, remote) = to_json_pair(&v, &m);
        assert!(host.contains(key));
        assert!(!remote.contains(key), "{remote}");
        let mut expected = v.clone();
        walk_mask(&mut expected, &m);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&remote).unwrap(), expected);
    }

    proptest! {
        /// Masking while serialising equals serialising, parsing and masking every string.
        #[test]
        fn equals_masking_the_parsed_frame(words in proptest::collection::vec("[a-z ]{0,8}|ghp_[A-Za-z0-9]{36}|password=[a-z]{6}", 0..6)) {
            let m = Masker::default();
            let v = serde_json::json!({"event": "message", "payload": {"words": words.clone(), "first": words.first()}});
            let (_, remote) = to_json_pair(&v, &m);
            let mut expected = v.clone();
            walk_mask(&mut expected, &m);
            prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&remote).unwrap(), expected);
        }
    }
}
