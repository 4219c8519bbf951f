//! `moed verify`: SHA-256 of every package file against manifest.json.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::{Package, PackageError};

/// What a successful verification covered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub files: usize,
    pub bytes: u64,
}

pub(super) fn verify(pkg: &Package) -> Result<VerifyReport, PackageError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for (name, entry) in &pkg.manifest().files {
        let path = pkg.path(name);
        let read_err = |e: std::io::Error| PackageError::Read {
            path: path.clone(),
            message: e.to_string(),
        };
        if !path.exists() {
            return Err(PackageError::MissingFile {
                file: name.clone(),
                path,
            });
        }
        let mut file = std::fs::File::open(&path).map_err(read_err)?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        loop {
            let got = file.read(&mut buf).map_err(read_err)?;
            if got == 0 {
                break;
            }
            hasher.update(&buf[..got]);
            n += got as u64;
        }
        if n != entry.bytes {
            return Err(PackageError::WrongSize {
                file: name.clone(),
                expected: entry.bytes,
                found: n,
                kind: if n < entry.bytes {
                    "truncated"
                } else {
                    "longer than listed"
                },
            });
        }
        let found = hex(&hasher.finalize());
        if !found.eq_ignore_ascii_case(entry.sha256.trim()) {
            return Err(PackageError::Checksum {
                file: name.clone(),
                expected: entry.sha256.clone(),
                found,
            });
        }
        total += n;
    }
    Ok(VerifyReport {
        files: pkg.manifest().files.len(),
        bytes: total,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
