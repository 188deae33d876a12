//! Reading manifests: files (or `-` for stdin) holding one or more YAML documents.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

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

/// Splits YAML text into its non-empty documents.
pub fn parse(text: &str) -> Result<Vec<Document>, LoadError> {
    let mut documents = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(document).map_err(|source| LoadError::Yaml { index, source })?;
        if !value.is_null() {
            documents.push(Document {
                index: documents.len(),
                value,
            });
        }
    }
    Ok(documents)
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
    fn reports_the_failing_document_with_its_line() {
        let err = parse("a: 1\n---\nb: [1,\n").unwrap_err().to_string();
        assert!(err.starts_with("cannot parse document 1: "), "{err}");
        assert!(err.contains("line"), "{err}");
    }
}
