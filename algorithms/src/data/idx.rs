//! IDX files (the MNIST format): a big-endian header with a magic number
//! (`0x00 0x00 type ndim`), `ndim` u32 dimensions, then the values.
//! Plain or gzip-compressed.

use super::{open_maybe_gz, DataError, Dataset, Features, RawLabels};
use ndarray::Array2;
use std::io::Read;
use std::path::Path;

/// Scale applied to IDX u8 pixels; recorded in model files so that
/// evaluation preprocesses the same way.
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// The raw content of an IDX file of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxU8 {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file whose element type is unsigned byte (0x08).
pub fn read_u8(path: &Path) -> Result<IdxU8, DataError> {
    let mut r = open_maybe_gz(path)?;
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .map_err(|_| DataError::invalid(path, "file too short for an IDX header"))?;
    if head[0] != 0 || head[1] != 0 {
        return Err(DataError::invalid(
            path,
            format!(
                "not an IDX file: magic bytes {:02x}{:02x}, expected 0000",
                head[0], head[1]
            ),
        ));
    }
    if head[2] != 0x08 {
        return Err(DataError::invalid(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08)",
                head[2]
            ),
        ));
    }
    let ndim = head[3] as usize;
    if ndim == 0 || ndim > 4 {
        return Err(DataError::invalid(
            path,
            format!("IDX with {ndim} dimensions is not supported"),
        ));
    }
    let mut dims = Vec::with_capacity(ndim);
    for i in 0..ndim {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)
            .map_err(|_| DataError::invalid(path, format!("header truncated in dimension {i}")))?;
        dims.push(u32::from_be_bytes(b) as usize);
    }
    let total: usize = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::invalid(path, format!("dimensions {dims:?} overflow")))?;
    if total > 1 << 34 {
        return Err(DataError::invalid(
            path,
            format!("dimensions {dims:?} too large"),
        ));
    }
    // The header's size, not yet read: grown with what the file holds.
    let mut data = Vec::with_capacity(total.min(1 << 26));
    r.by_ref()
        .take(total as u64)
        .read_to_end(&mut data)
        .map_err(|e| DataError::io(path, e))?;
    if data.len() != total {
        return Err(DataError::invalid(
            path,
            format!(
                "truncated: header says {dims:?} ({total} values) but only {} follow (byte offset {})",
                data.len(),
                4 + 4 * ndim + data.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra).map_err(|e| DataError::io(path, e))? != 0 {
        return Err(DataError::invalid(
            path,
            format!("trailing bytes after the {total} values of {dims:?}"),
        ));
    }
    Ok(IdxU8 { dims, data })
}

/// Reads IDX images (n × rows × cols) and labels (n) with pixels scaled to
/// [0, 1].
pub fn read_features_labels(
    images: &Path,
    labels: &Path,
) -> Result<(Features, RawLabels), DataError> {
    let img = read_u8(images)?;
    let lab = read_u8(labels)?;
    if img.dims.len() < 2 {
        return Err(DataError::invalid(
            images,
            format!("expected images of 2+ dimensions, got {:?}", img.dims),
        ));
    }
    if lab.dims.len() != 1 {
        return Err(DataError::invalid(
            labels,
            format!("expected 1-dimensional labels, got {:?}", lab.dims),
        ));
    }
    let n = img.dims[0];
    if lab.dims[0] != n {
        return Err(DataError::invalid(
            labels,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                n,
                images.display()
            ),
        ));
    }
    let dim = img.dims[1..].iter().product::<usize>();
    let features = Array2::from_shape_vec(
        (n, dim),
        img.data.iter().map(|&p| p as f32 * PIXEL_SCALE).collect(),
    )
    .expect("shape checked");
    let labels = lab.data.iter().map(|&l| l.to_string()).collect();
    Ok((Features::Dense(features), RawLabels(labels)))
}

/// [`read_features_labels`] as a data set.
pub fn read_images_labels(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let (f, l) = read_features_labels(images, labels)?;
    Ok(Dataset::from_raw(f, l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn reads_plain_and_reports_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        img.extend([0, 255, 51, 0]);
        let lab = [0, 0, 8, 1, 0, 0, 0, 2, 3, 1];
        let ip = write(dir.path(), "i", &img);
        let lp = write(dir.path(), "l", &lab);
        let ds = read_images_labels(&ip, &lp).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.dim(), 2);
        assert_eq!(ds.features.to_dense()[[0, 1]], 1.0);
        assert_eq!(ds.class_names, vec!["1", "3"]);
        assert_eq!(ds.labels, vec![1, 0]);
        assert_eq!(ds.num_classes, 2);

        let short = write(dir.path(), "s", &img[..18]);
        let e = read_images_labels(&short, &lp).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("/s"), "{e}");
        let bad = write(dir.path(), "b", b"hello world");
        let e = read_u8(&bad).unwrap_err().to_string();
        assert!(e.contains("not an IDX file"), "{e}");
    }
}
