//! The model file format: [safetensors](https://huggingface.co/docs/safetensors)
//! with petuum's header in its `__metadata__` map (documented in
//! `docs/models.md`). Readable from Python with
//! `safetensors.numpy.load_file` and `safe_open(...).metadata()`.
//!
//! Metadata keys every model has: `format` = `petuum-model`,
//! `format_version` = `1`, `algorithm`; the rest are per algorithm.

use safetensors::tensor::Dtype;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "petuum-model";
pub const FORMAT_VERSION: &str = "1";

/// A problem reading or writing a model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The OS error is in the message (not a `source`, which error
    /// chains would print a second time).
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a petuum model: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: model has no tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: metadata `{key}`: {reason}")]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// A tensor of f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A model: named f32 tensors plus string metadata.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ModelFile {
    pub path: PathBuf,
    pub metadata: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, Tensor>,
}

impl ModelFile {
    pub fn new(algorithm: &str) -> Self {
        let mut metadata = BTreeMap::new();
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("format_version".into(), FORMAT_VERSION.into());
        metadata.insert("algorithm".into(), algorithm.into());
        ModelFile {
            path: PathBuf::new(),
            metadata,
            tensors: BTreeMap::new(),
        }
    }

    pub fn algorithm(&self) -> &str {
        self.metadata
            .get("algorithm")
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.metadata.insert(key.into(), value.to_string());
    }

    /// Records metrics (e.g. held-out accuracy) in the metadata.
    pub fn set_metrics(&mut self, metrics: &[(String, f64)]) {
        for (k, v) in metrics {
            self.set(k, v);
        }
    }

    /// The `class_names` metadata: labels as written in the training data.
    pub fn class_names(&self) -> Result<Vec<String>, ModelError> {
        serde_json::from_str(&self.meta::<String>("class_names")?).map_err(|e| {
            ModelError::Metadata {
                path: self.path.clone(),
                key: "class_names".into(),
                reason: e.to_string(),
            }
        })
    }

    pub fn add_tensor(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor {name} shape"
        );
        self.tensors.insert(name.into(), Tensor { shape, data });
    }

    pub fn tensor(&self, name: &str) -> Result<&Tensor, ModelError> {
        self.tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.into(),
            })
    }

    /// A metadata value parsed as `T`.
    pub fn meta<T: std::str::FromStr>(&self, key: &str) -> Result<T, ModelError>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.metadata.get(key).ok_or_else(|| ModelError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            reason: "missing".into(),
        })?;
        v.parse().map_err(|e: T::Err| ModelError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            // The parser's reason, not the value (a model file's contents
            // stay out of errors).
            reason: e.to_string(),
        })
    }

    /// The file's bytes. Deterministic: tensors and metadata in name order,
    /// so the same model always gives the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // safetensors layout: u64 LE header size, JSON header padded with
        // spaces to a multiple of 8, then the tensors' little-endian data.
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, t) in &self.tensors {
            let len = t.data.len() * 4;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        let meta: serde_json::Map<String, serde_json::Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
        // serde_json's Map is a BTreeMap here (no preserve_order): sorted keys.
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + json.len() + offset);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        for t in self.tensors.values() {
            for x in &t.data {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out
    }

    /// Writes the model atomically (temp file, fsync, rename). Returns its size.
    pub fn save(&self, path: &Path) -> Result<u64, ModelError> {
        let io = |error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        };
        let bytes = self.to_bytes();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(bytes.len() as u64)
    }

    /// Reads and checks a model file.
    pub fn load(path: &Path) -> Result<ModelFile, ModelError> {
        let bytes = std::fs::read(path).map_err(|error| ModelError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let fmt = |reason: String| ModelError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| fmt(e.to_string()))?;
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(fmt(
                "missing `format = petuum-model` in the safetensors metadata".into(),
            ));
        }
        let version = metadata.get("format_version").cloned().unwrap_or_default();
        if version != FORMAT_VERSION {
            return Err(fmt(format!(
                "format_version `{version}` is not supported (this build reads {FORMAT_VERSION})"
            )));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| fmt(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(fmt(format!(
                    "tensor `{name}` has dtype {:?}, expected F32",
                    view.dtype()
                )));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(ModelFile {
            path: path.to_path_buf(),
            metadata,
            tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let mut m = ModelFile::new("test");
        m.set("classes", 3);
        m.add_tensor("w", vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        m.save(&p).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            m.to_bytes(),
            "same model, same bytes"
        );
        let back = ModelFile::load(&p).unwrap();
        assert_eq!(back.tensors, m.tensors);
        assert_eq!(back.meta::<u32>("classes").unwrap(), 3);
        assert_eq!(back.algorithm(), "test");

        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&p, &bytes).unwrap();
        let e = ModelFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a petuum model"), "{e}");
    }
}
