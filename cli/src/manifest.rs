//! Reading manifests: files (or `-` for stdin) holding one or more YAML documents.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Largest manifest file read: far beyond any real manifest, small enough that a wrong
/// argument (a disk image, /dev/zero) fails fast instead of exhausting memory.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// Why a file could not be turned into documents.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading failed.
    #[error("cannot read: {0}")]
    Read(#[from] std::io::Error),
    /// The file is larger than [`MAX_MANIFEST_BYTES`].
    #[error("cannot read: larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("cannot parse: not UTF-8 text")]
    NotUtf8,
    /// No document at all: an empty file, or only comments and `---`. Refused rather
    /// than passed: nothing in it was checked.
    #[error("holds no YAML document (the file is empty, or has only comments and ---)")]
    NoDocuments,
    /// A byte order mark after the start of the text, where YAML does not expect one
    /// (the usual cause: files joined with `cat`, each with its own mark).
    #[error(
        "cannot parse: a byte order mark (U+FEFF) at line {line}; only the start of a file may have one"
    )]
    ByteOrderMark {
        /// 1-based line.
        line: usize,
    },
    /// Not YAML.
    #[error("cannot parse document {index}: {source}")]
    Yaml {
        /// 0-based document index in the file.
        index: usize,
        /// The parser's error, with line and column.
        source: serde_norway::Error,
    },
}

/// One document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// 0-based index among the file's non-empty documents.
    pub index: usize,
    /// The document as JSON.
    pub value: Value,
}

/// Reads `path` (`-` is stdin) and splits it into its non-empty YAML documents.
pub fn load(path: &Path) -> Result<Vec<Document>, LoadError> {
    let text = if path.as_os_str() == "-" {
        read_limited(std::io::stdin().lock(), MAX_MANIFEST_BYTES)?
    } else {
        read_limited(std::fs::File::open(path)?, MAX_MANIFEST_BYTES)?
    };
    parse(&text)
}

/// Reads at most `limit` bytes of UTF-8 text; one byte more is an error, not a cut.
fn read_limited(reader: impl Read, limit: u64) -> Result<String, LoadError> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(LoadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8)
}

/// The byte order mark some editors (Windows Notepad among them) put at the start of a
/// UTF-8 file. It marks the encoding and is not part of the text.
const BYTE_ORDER_MARK: char = '\u{feff}';

/// Splits YAML text into its non-empty documents; there must be at least one. A leading
/// byte order mark is skipped; one anywhere else is refused with its line, since the
/// parser's own error for it points elsewhere.
pub fn parse(text: &str) -> Result<Vec<Document>, LoadError> {
    let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text);
    if let Some(at) = text.find(BYTE_ORDER_MARK) {
        let line = 1 + text[..at].matches('\n').count();
        return Err(LoadError::ByteOrderMark { line });
    }
    let mut documents = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = DistinctKeys
            .deserialize(document)
            .map_err(|source| LoadError::Yaml { index, source })?;
        if !value.is_null() {
            documents.push(Document {
                index: documents.len(),
                value,
            });
        }
    }
    if documents.is_empty() {
        return Err(LoadError::NoDocuments);
    }
    Ok(documents)
}

/// `text` with its control characters (newlines, escapes, C1 codes) written as Rust
/// escapes (`\n`, `\u{1b}`), for printing text that comes from a manifest: a name or a
/// key holding a raw escape sequence must not drive the terminal, nor one value break
/// the one-line-per-violation output into several.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Reads a YAML value as JSON, as `serde_json::Value`'s own `Deserialize` does, except
/// that a mapping repeating a key is an error. YAML forbids repeated keys, but parsers
/// disagree on what they do with one (serde keeps the last value, others the first or
/// refuse), so `hostNetwork: true` followed by `hostNetwork: false` would mean one thing
/// here and another elsewhere.
struct DistinctKeys;

impl<'de> DeserializeSeed<'de> for DistinctKeys {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DistinctKeys {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Value::deserialize(de::value::I128Deserializer::new(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Value::deserialize(de::value::U128Deserializer::new(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(DistinctKeys)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(NewKey(&object))? {
            let value = map.next_value_seed(DistinctKeys)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A mapping key, refused when the mapping already has it. The error is raised while
/// the key is read, so the parser gives it the key's own line and column.
struct NewKey<'a>(&'a Map<String, Value>);

impl<'de> DeserializeSeed<'de> for NewKey<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        // As serde_json's own map keys: a scalar key (`1`, `true`) is read as its text.
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NewKey<'_> {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        if self.0.contains_key(key) {
            return Err(E::custom(format!(
                "duplicate key {key:?}: a mapping may set each key once"
            )));
        }
        Ok(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_boundary() {
        let at_limit = "a".repeat(16);
        assert_eq!(read_limited(at_limit.as_bytes(), 16).unwrap(), at_limit);
        let over = "a".repeat(17);
        assert!(matches!(
            read_limited(over.as_bytes(), 16),
            Err(LoadError::TooLarge)
        ));
        assert!(matches!(
            read_limited(&[0xff, 0xfe][..], 16),
            Err(LoadError::NotUtf8)
        ));
    }

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs = parse("---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["b"], 2);
        assert_eq!(docs[1].index, 1);
    }

    #[test]
    fn a_repeated_key_is_an_error_naming_the_key_and_its_line() {
        let err = parse("kind: Pod\nspec:\n  hostNetwork: true\n  hostNetwork: false\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cannot parse document 0: spec: duplicate key \"hostNetwork\": a mapping may set each key once at line 4 column 3"
        );
        // In a list item, in a later document, and a key repeated in flow style.
        let err = parse("a: 1\n---\nitems:\n- {x: 1, y: 2, x: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot parse document 1: items[0]: duplicate key \"x\""),
            "{err}"
        );
        assert!(err.contains("line 4"), "{err}");
        // The same key in different mappings is fine.
        let docs = parse("a: {x: 1}\nb: {x: 2}\n").unwrap();
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": {"x": 1}, "b": {"x": 2}})
        );
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let yaml = "s: text\ni: -3\nu: 18446744073709551615\nf: 1.5\nb: true\nn: null\ne: ~\nl: [1, two]\n1: numeric key\nnan: .nan\n";
        let expected: Value = serde_norway::from_str(yaml).unwrap();
        assert_eq!(parse(yaml).unwrap()[0].value, expected);
    }

    #[test]
    fn a_file_with_no_document_is_an_error() {
        for empty in [
            "",
            "\n",
            "# only a comment\n",
            "---\n",
            "---\n# c\n---\n...\n",
            "~\n",
        ] {
            assert!(
                matches!(parse(empty), Err(LoadError::NoDocuments)),
                "{empty:?}: {:?}",
                parse(empty)
            );
        }
        assert_eq!(parse("# c\n---\na: 1\n").unwrap().len(), 1);
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_any_other_is_refused_with_its_line() {
        let docs = parse("\u{feff}a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value, serde_json::json!({"a": 1}));
        let err = parse("\u{feff}a: 1\n---\n\u{feff}b: 2\n").unwrap_err();
        assert!(
            matches!(err, LoadError::ByteOrderMark { line: 3 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot parse: a byte order mark (U+FEFF) at line 3; only the start of a file may have one"
        );
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("plain \"quoted\" é ✓"), "plain \"quoted\" é ✓");
        assert_eq!(
            printable("a\u{1b}[31mb\nc\td\u{9b}e\u{7f}"),
            "a\\u{1b}[31mb\\nc\\td\\u{9b}e\\u{7f}"
        );
    }

    #[test]
    fn reports_the_failing_document_with_its_line() {
        let err = parse("a: 1\n---\nb: [1,\n").unwrap_err().to_string();
        assert!(err.starts_with("cannot parse document 1: "), "{err}");
        assert!(err.contains("line"), "{err}");
    }
}
