//! A small GGUF header reader. It exists so that parrot can reject a missing, foreign or truncated model file with
//! a clear message *before* llama.cpp sees it (llama.cpp only returns an opaque null, or asserts in debug builds),
//! and so that the transcript header and `--help` paths can describe a model (name, architecture, chat template,
//! trained context) without loading its weights.
//!
//! Format reference: ggml's `docs/gguf.md` — magic `GGUF`, version, tensor count, metadata key/value pairs, tensor
//! infos, then aligned tensor data. Only the header is parsed; tensor data is checked for being inside the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A metadata value. Arrays are kept only as their length, except arrays of strings, which are dropped too:
/// parrot never needs the tokenizer's vocabulary here.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i128),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string (lossily decoded).
    Str(String),
    /// An array, by length.
    Array(u64),
}

/// What parrot needs to know about a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufInfo {
    /// File size in bytes.
    pub file_size: u64,
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, Value>,
}

impl GgufInfo {
    /// A string metadata value.
    #[must_use]
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// An integer metadata value.
    #[must_use]
    pub fn get_int(&self, key: &str) -> Option<i128> {
        match self.metadata.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// `general.architecture`.
    #[must_use]
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// The Jinja chat template embedded in the file, if any.
    #[must_use]
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// Bytes of f16 KV cache one token takes: layers × KV heads × (key + value head size) × 2.
    #[must_use]
    pub fn kv_bytes_per_token(&self) -> Option<u64> {
        let arch = self.architecture()?;
        let int = |k: &str| self.get_int(&format!("{arch}.{k}")).and_then(|v| u64::try_from(v).ok());
        let layers = int("block_count")?;
        let heads = int("attention.head_count")?;
        let kv_heads = int("attention.head_count_kv").unwrap_or(heads);
        let head_dim = int("embedding_length")? / heads.max(1);
        let k = int("attention.key_length").unwrap_or(head_dim);
        let v = int("attention.value_length").unwrap_or(head_dim);
        // Crafted metadata can hold any u64: an overflow means no estimate, never a panic or a wrapped figure.
        layers.checked_mul(kv_heads)?.checked_mul(k.checked_add(v)?)?.checked_mul(2)
    }

    /// `<arch>.context_length`: the context the model was trained with.
    #[must_use]
    pub fn context_length(&self) -> Option<u32> {
        let arch = self.architecture()?;
        self.get_int(&format!("{arch}.context_length")).and_then(|v| u32::try_from(v).ok())
    }
}

/// Reads and checks the header of the GGUF file at `path`.
///
/// # Errors
/// A one-line message naming the file when it is missing, not a regular file, not GGUF, of an unsupported version,
/// corrupt, or truncated (tensor data past the end of the file).
pub fn inspect(path: &Path) -> Result<GgufInfo> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .with_context(|| format!("model file '{shown}' does not exist: check the path, or fetch it first"))?;
    if !meta.is_file() {
        bail!("model '{shown}' is not a file: pass the path of a .gguf file");
    }
    let file = File::open(path).with_context(|| format!("could not open model file '{shown}'"))?;
    parse(BufReader::new(file), meta.len()).map_err(|e| anyhow::anyhow!("model file '{shown}' {e:#}"))
}

struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

/// The longest metadata key or string value kept in memory. Chat templates, the longest strings parrot reads, are
/// tens of KB; a crafted file could otherwise make parrot allocate its whole size for one string.
const MAX_KEPT_STRING: u64 = 16 << 20;

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).context("is truncated: it ends inside its header")?;
        self.pos += N as u64;
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self, keep: bool) -> Result<Option<String>> {
        let n = self.u64()?;
        if n > self.len.saturating_sub(self.pos) {
            bail!("is corrupt or truncated: a header string of {n} bytes runs past the end of the file");
        }
        if keep {
            if n > MAX_KEPT_STRING {
                bail!("is corrupt: a header string of {n} bytes (parrot reads at most {MAX_KEPT_STRING})");
            }
            let mut buf = vec![0u8; usize::try_from(n)?];
            self.inner.read_exact(&mut buf).context("is truncated: it ends inside its header")?;
            self.pos += n;
            Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
        } else {
            let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())?;
            if copied != n {
                bail!("is truncated: it ends inside its header");
            }
            self.pos += n;
            Ok(None)
        }
    }
    fn value(&mut self, ty: u32, keep_str: bool) -> Result<Value> {
        Ok(match ty {
            0 => Value::Int(i128::from(self.bytes::<1>()?[0])),
            1 => Value::Int(i128::from(i8::from_le_bytes(self.bytes()?))),
            2 => Value::Int(i128::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::Int(i128::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::Int(i128::from(self.u32()?)),
            5 => Value::Int(i128::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::Str(self.string(keep_str)?.unwrap_or_default()),
            9 => {
                let item = self.u32()?;
                let count = self.u64()?;
                if count > self.len {
                    bail!("is corrupt: an array of {count} items in a {}-byte file", self.len);
                }
                if item == 9 {
                    bail!("is not supported: nested arrays in metadata");
                }
                for _ in 0..count {
                    self.value(item, false)?;
                }
                Value::Array(count)
            }
            10 => Value::Int(i128::from(self.u64()?)),
            11 => Value::Int(i128::from(i64::from_le_bytes(self.bytes()?))),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => bail!("is corrupt: unknown metadata value type {other}"),
        })
    }
}

/// Bytes per block and elements per block of a ggml tensor type, for the types whose layout is fixed.
fn type_layout(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (4, 1),
        1 | 30 => (2, 1),
        2 | 20 => (18, 32),
        3 => (20, 32),
        6 => (22, 32),
        7 => (24, 32),
        8 => (34, 32),
        9 => (36, 32),
        10 => (84, 256),
        11 | 21 => (110, 256),
        12 => (144, 256),
        13 => (176, 256),
        14 => (210, 256),
        15 => (292, 256),
        16 | 35 => (66, 256),
        17 => (74, 256),
        18 => (98, 256),
        19 => (50, 256),
        22 => (82, 256),
        23 => (136, 256),
        24 => (1, 1),
        25 => (2, 1),
        26 => (4, 1),
        27 | 28 => (8, 1),
        29 => (56, 256),
        34 => (54, 256),
        39 => (17, 32),
        _ => return None,
    })
}

/// Parses a GGUF header from `reader`; `len` is the total file length.
///
/// # Errors
/// See [`inspect`]; messages start with a verb phrase so that callers can prefix the file name.
pub fn parse<R: Read>(reader: R, len: u64) -> Result<GgufInfo> {
    let mut r = Reader { inner: reader, pos: 0, len };
    let magic: [u8; 4] = r.bytes().map_err(|_| anyhow::anyhow!("is not a GGUF model (it is empty or too short)"))?;
    if &magic != b"GGUF" {
        bail!("is not a GGUF model (it does not start with the GGUF magic): pass a .gguf file");
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        bail!("has GGUF version {version}, which this build does not read (2 and 3 are supported)");
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if tensor_count > len || kv_count > len {
        bail!("is corrupt: its header claims {tensor_count} tensors and {kv_count} metadata keys");
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string(true)?.unwrap_or_default();
        let ty = r.u32()?;
        let value = r.value(ty, true)?;
        metadata.insert(key, value);
    }
    let mut data_end = 0u64;
    for _ in 0..tensor_count {
        r.string(false)?;
        let n_dims = r.u32()?;
        if n_dims > 8 {
            bail!("is corrupt: a tensor with {n_dims} dimensions");
        }
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            elements = elements.saturating_mul(r.u64()?);
        }
        let ty = r.u32()?;
        let offset = r.u64()?;
        let size = type_layout(ty).map_or(1, |(bytes, block)| elements.div_ceil(block).saturating_mul(bytes));
        data_end = data_end.max(offset.saturating_add(size));
    }
    let alignment = match metadata.get("general.alignment") {
        Some(Value::Int(a)) if *a > 0 => u64::try_from(*a).unwrap_or(32),
        _ => 32,
    };
    let data_start = r.pos.div_ceil(alignment) * alignment;
    if data_start.saturating_add(data_end) > len {
        bail!(
            "is truncated: its tensors need {} bytes but the file has {len}; download it again",
            data_start.saturating_add(data_end)
        );
    }
    Ok(GgufInfo { file_size: len, version, tensor_count, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A tiny valid GGUF: two metadata keys and one F32 tensor of 8 elements.
    fn tiny() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        string(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        string(&mut b, "llama");
        string(&mut b, "llama.context_length");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&4096u32.to_le_bytes());
        string(&mut b, "w");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&8u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend_from_slice(&[0u8; 32]);
        b
    }

    #[test]
    fn reads_a_valid_header() {
        let b = tiny();
        let info = parse(&b[..], b.len() as u64).unwrap();
        assert_eq!(info.architecture(), Some("llama"));
        assert_eq!(info.context_length(), Some(4096));
        assert_eq!(info.tensor_count, 1);
    }

    #[test]
    fn rejects_foreign_and_truncated_files() {
        let err = parse(&b"{\"not\": \"gguf\"}"[..], 15).unwrap_err().to_string();
        assert!(err.contains("not a GGUF model"), "{err}");
        let b = tiny();
        let cut = &b[..b.len() - 8];
        let err = parse(cut, cut.len() as u64).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = parse(&b[..40], 40).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn crafted_huge_dimensions_give_no_kv_estimate_instead_of_overflowing() {
        let mut metadata = BTreeMap::new();
        metadata.insert("general.architecture".to_string(), Value::Str("llama".into()));
        for (k, v) in [("block_count", u64::MAX), ("attention.head_count", 1), ("embedding_length", u64::MAX)] {
            metadata.insert(format!("llama.{k}"), Value::Int(i128::from(v)));
        }
        let info = GgufInfo { file_size: 0, version: 3, tensor_count: 0, metadata };
        assert_eq!(info.kv_bytes_per_token(), None);
    }
}
