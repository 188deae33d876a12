//! Protobuf request bodies of the kinds kubectl's generator commands create (`kubectl
//! create namespace|configmap|secret|serviceaccount`), which the typed client sends as
//! `application/vnd.kubernetes.protobuf`. The Kubernetes envelope (`k8s\0` and a
//! `runtime.Unknown`) is unwrapped and the object decoded field by field into JSON:
//! from `ObjectMeta` the name, generateName, namespace, labels, annotations and
//! finalizers; from the objects their data fields. Any other kind is `415`.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::error::ApiError;

/// The content type of Protobuf bodies.
pub(crate) const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\x00";

fn malformed(what: &str) -> ApiError {
    ApiError::bad_request(format!("the Protobuf body is malformed: {what}"))
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| malformed("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        if n > self.buf.len() {
            return Err(malformed("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, ApiError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed("length"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

/// Every field of a message as (number, value).
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut reader = Reader { buf };
    let mut out = Vec::new();
    while let Some(field) = reader.field()? {
        out.push(field);
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
}

/// A map entry (`1: key`, `2: value`); a bytes value is base64, as in JSON.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), ApiError> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for (number, wire) in fields(bytes)? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) if binary => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (2, Wire::Bytes(b)) => value = json!(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(
    target: &mut Value,
    field: &str,
    bytes: &[u8],
    binary: bool,
) -> Result<(), ApiError> {
    let (key, value) = map_entry(bytes, binary)?;
    if !target[field].is_object() {
        target[field] = Value::Object(Map::new());
    }
    target[field][key] = value;
    Ok(())
}

fn push_string(target: &mut Value, field: &str, bytes: &[u8]) -> Result<(), ApiError> {
    if !target[field].is_array() {
        target[field] = json!([]);
    }
    if let Some(list) = target[field].as_array_mut() {
        list.push(json!(text(bytes)?));
    }
    Ok(())
}

fn object_meta(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut meta = json!({});
    for (number, wire) in fields(bytes)? {
        let Wire::Bytes(b) = wire else { continue };
        match number {
            1 => meta["name"] = json!(text(b)?),
            2 => meta["generateName"] = json!(text(b)?),
            3 => meta["namespace"] = json!(text(b)?),
            11 => insert_entry(&mut meta, "labels", b, false)?,
            12 => insert_entry(&mut meta, "annotations", b, false)?,
            14 => push_string(&mut meta, "finalizers", b)?,
            _ => {}
        }
    }
    Ok(meta)
}

/// Decodes a Protobuf body into the JSON object it stands for.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("no k8s envelope"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, wire) in fields(inner)? {
        match (number, wire) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, w) in fields(type_meta)? {
                    match (n, w) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut object = json!({"apiVersion": api_version, "kind": kind});
    for (number, wire) in fields(raw)? {
        decode_field(&mut object, &api_version, &kind, number, wire)?;
    }
    Ok(object)
}

fn decode_field(
    object: &mut Value,
    api_version: &str,
    kind: &str,
    number: u64,
    wire: Wire<'_>,
) -> Result<(), ApiError> {
    match (api_version, kind, number, wire) {
        (_, _, 1, Wire::Bytes(b)) => object["metadata"] = object_meta(b)?,
        ("v1", "Namespace", 2, Wire::Bytes(spec)) => {
            object["spec"] = json!({});
            for (n, w) in fields(spec)? {
                if let (1, Wire::Bytes(b)) = (n, w) {
                    push_string(&mut object["spec"], "finalizers", b)?;
                }
            }
        }
        ("v1", "ConfigMap", 2, Wire::Bytes(b)) => insert_entry(object, "data", b, false)?,
        ("v1", "ConfigMap", 3, Wire::Bytes(b)) => insert_entry(object, "binaryData", b, true)?,
        ("v1", "ConfigMap", 4, Wire::Varint(v)) | ("v1", "Secret", 5, Wire::Varint(v)) => {
            object["immutable"] = json!(v != 0)
        }
        ("v1", "Secret", 2, Wire::Bytes(b)) => insert_entry(object, "data", b, true)?,
        ("v1", "Secret", 3, Wire::Bytes(b)) => object["type"] = json!(text(b)?),
        ("v1", "Secret", 4, Wire::Bytes(b)) => insert_entry(object, "stringData", b, false)?,
        ("v1", "ServiceAccount", 4, Wire::Varint(v)) => {
            object["automountServiceAccountToken"] = json!(v != 0)
        }
        ("v1", "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount", _, _) => {}
        _ => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "Protobuf bodies of {api_version} {kind} are not decoded by this server: send JSON or YAML (kubectl create -f, kubectl apply)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(number << 3 | 2).unwrap_or(0)];
        out.push(u8::try_from(bytes.len()).unwrap_or(0));
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_secret_envelope_decodes_to_json() -> Result<(), ApiError> {
        let type_meta = [bytes_field(1, b"v1"), bytes_field(2, b"Secret")].concat();
        let label = [bytes_field(1, b"app"), bytes_field(2, b"web")].concat();
        let meta = [bytes_field(1, b"s"), bytes_field(11, &label)].concat();
        let data = [bytes_field(1, b"k"), bytes_field(2, b"\x00\x01")].concat();
        let secret = [
            bytes_field(1, &meta),
            bytes_field(2, &data),
            bytes_field(3, b"Opaque"),
        ]
        .concat();
        let body = [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, &secret),
        ]
        .concat();
        let decoded = decode(&body)?;
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {"app": "web"}}, "data": {"k": "AAE="}, "type": "Opaque"})
        );
        assert_eq!(
            decode(b"k8s\x00\x0a\x05").err().map(|e| e.code),
            Some(400),
            "truncated"
        );
        assert_eq!(
            decode(b"{}").err().map(|e| e.code),
            Some(400),
            "no envelope"
        );
        Ok(())
    }
}
