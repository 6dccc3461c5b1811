//! The Rust type an allocation is for, read from the std/dependency frames
//! between the owner's function and the allocator (`<String as
//! Clone>::clone`, `alloc::raw_vec::RawVec<T,A>::grow_one`,
//! `hashbrown::raw::RawTable<T,A>::reserve_rehash`...). Legacy-mangled
//! names carry no generic arguments, so `Vec<_>` is as far as a plain
//! `RawVec<T,A>` frame goes; concrete arguments (`Vec<u8>`) are kept when
//! the symbol shows them.

use crate::profile::Frame;

/// The outermost frame that names a container type wins (closest to the
/// owner's code: `String::clone` rather than the `RawVec` it uses).
/// `below_owner` is root first.
pub fn allocation_type(below_owner: &[Frame]) -> Option<String> {
    below_owner.iter().find_map(|f| type_of(&f.function))
}

/// Whether the allocation grows a collection (a map's table, a vector's
/// buffer through push/extend/insert): such memory is usually held by the
/// collection, not leaked.
pub fn grows_collection(below_owner: &[Frame]) -> bool {
    below_owner.iter().any(|f| {
        let n = f.function.as_str();
        n.contains("reserve_rehash")
            || n.contains("RawTable") && (n.contains("insert") || n.contains("reserve") || n.contains("resize"))
            || n.contains("HashMap") && n.contains("insert")
            || n.contains("BTreeMap") && n.contains("insert")
            || n.contains("VecDeque") && (n.contains("push") || n.contains("grow"))
            || n.contains("grow_one")
            || n.contains("grow_amortized")
    })
}

fn type_of(function: &str) -> Option<String> {
    // `<X as Trait>::method`: X is the type.
    if let Some(rest) = function.strip_prefix('<')
        && let Some((ty, _)) = rest.split_once(" as ")
            && let Some(t) = container(ty) {
                return Some(t);
            }
    container(function)
}

/// A container type named in `path` (a function or type path).
fn container(path: &str) -> Option<String> {
    const KNOWN: &[(&str, &str)] = &[
        ("alloc::string::String", "String"),
        ("alloc::fmt::format", "String"),
        ("alloc::str::<impl str>::to_owned", "String"),
        ("<str as alloc::borrow::ToOwned>", "String"),
        ("alloc::vec::Vec", "Vec"),
        ("alloc::raw_vec::RawVec", "Vec"),
        ("alloc::collections::vec_deque", "VecDeque"),
        ("alloc::collections::btree", "BTreeMap node"),
        ("hashbrown::raw::RawTable", "HashMap table"),
        ("hashbrown::raw::RawTableInner", "HashMap table"),
        ("hashbrown::map::HashMap", "HashMap table"),
        ("std::collections::hash::map::HashMap", "HashMap table"),
        ("alloc::boxed::Box", "Box"),
        ("alloc::sync::Arc", "Arc"),
        ("alloc::rc::Rc", "Rc"),
        ("bytes::bytes_mut::BytesMut", "BytesMut"),
        ("bytes::bytes::Bytes", "Bytes"),
        ("smallvec::SmallVec", "SmallVec (spilled)"),
    ];
    let (prefix, name) = KNOWN.iter().find(|(prefix, _)| path.contains(prefix))?;
    // Keep concrete generic arguments when the symbol has them:
    // `alloc::vec::Vec<u8>` -> `Vec<u8>`; `Vec<T,A>` -> `Vec<_>`.
    let after = &path[path.find(prefix).unwrap_or(0) + prefix.len()..];
    let generic = after.strip_prefix('<').and_then(|g| {
        let mut depth = 1;
        let end = g.char_indices().find(|(_, c)| {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                _ => {}
            }
            depth == 0
        })?;
        Some(g[..end.0].to_string())
    });
    let takes_args = matches!(*name, "Vec" | "VecDeque" | "Box" | "Arc" | "Rc");
    Some(match generic {
        Some(args) if takes_args => {
            let first = args.split(',').next().unwrap_or("_").trim();
            let first = if first.len() <= 2 && first.chars().all(|c| c.is_ascii_uppercase()) { "_" } else { first };
            format!("{name}<{}>", short_type(first))
        }
        _ if takes_args => format!("{name}<_>"),
        _ => name.to_string(),
    })
}

/// `alloc::string::String` -> `String`, keeping generic arguments short.
fn short_type(path: &str) -> String {
    let base = path.split('<').next().unwrap_or(path);
    let short = base.rsplit("::").next().unwrap_or(base);
    match path.find('<') {
        Some(i) => format!("{short}{}", &path[i..]),
        None => short.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::dep;

    #[test]
    fn container_frames_name_the_type() {
        assert_eq!(type_of("<alloc::string::String as core::clone::Clone>::clone").as_deref(), Some("String"));
        assert_eq!(type_of("alloc::raw_vec::RawVec<T,A>::grow_one").as_deref(), Some("Vec<_>"));
        assert_eq!(type_of("<alloc::vec::Vec<u8> as core::clone::Clone>::clone").as_deref(), Some("Vec<u8>"));
        assert_eq!(type_of("alloc::fmt::format::format_inner").as_deref(), Some("String"));
        assert_eq!(type_of("hashbrown::raw::RawTable<T,A>::reserve_rehash").as_deref(), Some("HashMap table"));
        assert_eq!(type_of("core::ptr::drop_in_place"), None);
    }

    #[test]
    fn the_frame_closest_to_the_owner_wins_and_collections_are_recognised() {
        let frames = [
            dep("hashbrown::map::HashMap<K,V,S,A>::insert", true),
            dep("hashbrown::raw::RawTable<T,A>::reserve_rehash", false),
            dep("alloc::alloc::Global::alloc_impl", true),
        ];
        assert_eq!(allocation_type(&frames).as_deref(), Some("HashMap table"));
        assert!(grows_collection(&frames));
        let clone = [dep("<alloc::string::String as core::clone::Clone>::clone", true), dep("alloc::raw_vec::RawVecInner<A>::try_allocate_in", false)];
        assert_eq!(allocation_type(&clone).as_deref(), Some("String"));
        assert!(!grows_collection(&clone));
    }
}
