//! Strategies the fuzz targets draw their inputs from: byte edits of a
//! valid seed, SQL from its keywords, migration folders as files, and JSON
//! documents (TOML goes through the same shape) edited value by value.
//! Every strategy shrinks: edits towards none, lists towards fewer items,
//! strings towards shorter ones.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::Value;

/// Bytes that often mean something to a parser.
const INTERESTING: &[u8] =
    &[0, 0x7f, 0x80, 0xff, b'"', b'\'', b'\\', b'\n', b'[', b']', b'{', b'}', b'/', b'.', b'-'];

/// What separates the pieces of generated SQL.
const SEPARATORS: &[&str] = &[" ", "\n", ""];

/// Strings that readers of runway's documents treat specially.
const STRINGS: &[&str] = &["", "../x", "/etc/passwd", "a/b", "\0", "1e999", "0-2", "running", "succeeded"];

/// One byte-level change.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Duplicate { from: Index, len: usize, to: Index },
}

fn edit(tokens: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<Index>(), select(INTERESTING)).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<Index>(), select(tokens)).prop_map(|(at, token)| Edit::Insert(at, token.as_bytes().to_vec())),
        (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<Index>(), 1..32usize).prop_map(|(at, len)| Edit::Delete(at, len)),
        (any::<Index>(), 1..64usize, any::<Index>()).prop_map(|(from, len, to)| Edit::Duplicate {
            from,
            len,
            to
        }),
    ]
}

fn apply(mut data: Vec<u8>, edits: Vec<Edit>) -> Vec<u8> {
    for edit in edits {
        let len = data.len();
        match edit {
            Edit::Flip(at, bit) if len > 0 => data[at.index(len)] ^= 1 << bit,
            Edit::Set(at, byte) if len > 0 => data[at.index(len)] = byte,
            Edit::Insert(at, bytes) => {
                let at = at.index(len + 1);
                data.splice(at..at, bytes);
            }
            Edit::Delete(at, n) if len > 0 => {
                let at = at.index(len);
                data.drain(at..(at + n).min(len));
            }
            Edit::Duplicate { from, len: n, to } if len > 0 => {
                let from = from.index(len);
                let copy = data[from..(from + n).min(len)].to_vec();
                let to = to.index(len + 1);
                data.splice(to..to, copy);
            }
            _ => {}
        }
    }
    data
}

/// One of `seeds` changed by up to eight byte edits (flips, interesting
/// bytes, inserted `tokens` of the format, deletions, duplications).
pub fn edited(seeds: Vec<Vec<u8>>, tokens: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    (select(seeds), vec(edit(tokens), 0..=8)).prop_map(|(seed, edits)| apply(seed, edits)).boxed()
}

/// SQL-ish text: `tokens`, identifiers, quoted strings, numbers and any
/// characters, in any order.
pub fn sql(tokens: &'static [&'static str]) -> BoxedStrategy<String> {
    let piece = prop_oneof![
        4 => select(tokens).prop_map(str::to_owned),
        2 => "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        1 => "'[^']{0,8}'?",
        1 => "\"[^\"]{0,8}\"?",
        1 => "\\$[a-z]{0,3}\\$",
        1 => "-?[0-9]{1,5}",
        1 => "\\PC{0,4}",
    ];
    (vec(piece, 0..48), select(SEPARATORS)).prop_map(|(pieces, separator)| pieces.join(separator)).boxed()
}

/// A migrations folder as (path, content) pairs: Prisma folder names,
/// `down.sql`, the lock file, and any other path.
pub fn files(tokens: &'static [&'static str], lock: &'static str) -> BoxedStrategy<Vec<(String, Vec<u8>)>> {
    let path = prop_oneof![
        3 => "[0-9]{14}_[a-z_ ]{1,12}/migration\\.sql",
        1 => "[0-9]{14}_[a-z_]{1,12}/down\\.sql",
        1 => Just("migration_lock.toml".to_owned()),
        1 => "[a-zA-Z0-9_./ -]{0,24}",
        1 => "\\PC{0,12}",
    ];
    let content = prop_oneof![
        4 => sql(tokens).prop_map(String::into_bytes),
        1 => Just(lock.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..32),
    ];
    vec((path, content), 0..6).boxed()
}

/// Any JSON value, nested a few levels, with the numbers and strings that
/// break readers (huge, negative, non-finite as strings, paths).
pub fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        select(STRINGS).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-z_]{0,10}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// One change to a document.
#[derive(Debug, Clone)]
enum DocEdit {
    /// The value at one of its places becomes another.
    Replace(Index, Value),
    /// A member or element goes.
    Remove(Index),
    /// A new member (a key the document knows, or any) or element.
    Add(Index, String, Value),
}

/// `seed` with up to six document edits (values replaced by any JSON value,
/// members removed, members added under keys of the seed or new ones).
pub fn json_doc(seed: Value) -> BoxedStrategy<Value> {
    let mut keys = Vec::new();
    collect_keys(&seed, &mut keys);
    keys.push("x".into());
    let key = prop_oneof![3 => select(keys), 1 => "[a-z_]{0,10}"];
    let edit = prop_oneof![
        3 => (any::<Index>(), json_value()).prop_map(|(at, v)| DocEdit::Replace(at, v)),
        1 => any::<Index>().prop_map(DocEdit::Remove),
        1 => (any::<Index>(), key, json_value()).prop_map(|(at, k, v)| DocEdit::Add(at, k, v)),
    ];
    (Just(seed), vec(edit, 0..=6))
        .prop_map(|(mut doc, edits)| {
            for edit in edits {
                apply_doc(&mut doc, edit);
            }
            doc
        })
        .boxed()
}

fn collect_keys(value: &Value, keys: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                keys.push(k.clone());
                collect_keys(v, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_keys(v, keys)),
        _ => {}
    }
}

/// JSON pointers to every place in `value` but the root.
fn places(value: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v)).collect(),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => Vec::new(),
    };
    for (key, child) in children {
        let place = format!("{at}/{key}");
        out.push(place.clone());
        places(child, place, out);
    }
}

fn apply_doc(doc: &mut Value, edit: DocEdit) {
    let mut all = Vec::new();
    places(doc, String::new(), &mut all);
    match edit {
        DocEdit::Replace(at, value) if !all.is_empty() => {
            if let Some(place) = doc.pointer_mut(&all[at.index(all.len())]) {
                *place = value;
            }
        }
        DocEdit::Remove(at) if !all.is_empty() => {
            let place = &all[at.index(all.len())];
            let (parent, last) = place.rsplit_once('/').expect("a place below the root");
            match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < items.len()
                    {
                        items.remove(i);
                    }
                }
                _ => {}
            }
        }
        DocEdit::Add(at, key, value) => {
            all.push(String::new());
            match doc.pointer_mut(&all[at.index(all.len())]) {
                Some(Value::Object(map)) => {
                    map.insert(key, value);
                }
                Some(Value::Array(items)) => items.push(value),
                _ => {}
            }
        }
        _ => {}
    }
}

/// `value` as TOML text: nulls (which TOML lacks) are left out; a value
/// TOML cannot hold gives the empty document.
pub fn toml_text(mut value: Value) -> Vec<u8> {
    fn strip_nulls(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(strip_nulls);
            }
            Value::Array(items) => {
                items.retain(|v| !v.is_null());
                items.iter_mut().for_each(strip_nulls);
            }
            _ => {}
        }
    }
    strip_nulls(&mut value);
    toml::to_string(&value).unwrap_or_default().into_bytes()
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn document_edits_change_the_document_and_keep_it_json() {
        let seed = serde_json::json!({"a": 1, "b": {"c": [1, 2]}});
        let mut runner = TestRunner::deterministic();
        let strategy = json_doc(seed.clone());
        let changed =
            (0..200).filter(|_| strategy.new_tree(&mut runner).expect("a value").current() != seed).count();
        assert!(changed > 100, "only {changed} of 200 documents changed");
    }

    #[test]
    fn toml_text_reads_back() {
        let value = serde_json::json!({"a": null, "b": {"c": [1, null, 2], "d": "x"}});
        let text = String::from_utf8(toml_text(value)).unwrap();
        let back: Value = toml::from_str(&text).unwrap();
        assert_eq!(back, serde_json::json!({"b": {"c": [1, 2], "d": "x"}}));
    }
}
