//! What the GPU execution providers need on this machine, found without starting them: ONNX
//! Runtime's provider libraries, the NVIDIA driver and its CUDA version, the CUDA, cuDNN and
//! TensorRT libraries; for each provider, usable or the first thing missing, by name.

use std::path::{Path, PathBuf};

use crate::ort_env::Provider;

/// Where the optional GPU companion package puts the CUDA, cuDNN and TensorRT libraries; searched
/// after the system's library path.
pub const GPU_LIB_DIR: &str = "/usr/lib/moed/cuda";

/// The CUDA major version the onnxruntime-gpu wheels' CUDA and TensorRT providers are built against
/// (with cuDNN 9 and TensorRT 10).
pub const CUDA_MAJOR: i32 = 12;

/// The CUDA runtime libraries the CUDA provider loads (CUDA 12, cuDNN 9).
const CUDA_LIBS: &[&str] = &[
    "libcudart.so.12",
    "libcublas.so.12",
    "libcublasLt.so.12",
    "libcurand.so.10",
    "libcufft.so.11",
    "libcudnn.so.9",
];

/// TensorRT 10's libraries, needed by the TensorRT provider on top of the CUDA ones.
const TENSORRT_LIBS: &[&str] = &[
    "libnvinfer.so.10",
    "libnvinfer_plugin.so.10",
    "libnvonnxparser.so.10",
];

/// One provider's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCheck {
    pub provider: Provider,
    /// `None`: everything it needs is here (it can still fail on a machine without a GPU).
    pub missing: Option<String>,
}

/// How a library is looked for; the real one is `dlopen`, tests substitute their own.
pub trait Loader {
    /// Loads `name` (a file name searched by the dynamic loader, or a path); the loader's message
    /// on failure.
    fn load(&self, name: &Path) -> Result<(), String>;
    /// The CUDA version the driver supports (e.g. 12040 for 12.4), or why it cannot be asked.
    fn driver_cuda_version(&self) -> Result<i32, String>;
}

/// Checks every GPU provider against the libraries next to `ort_library` and on this machine.
pub fn check(ort_library: &Path, loader: &dyn Loader) -> Vec<ProviderCheck> {
    let dir = ort_library.parent().unwrap_or(Path::new("."));
    let cuda = check_cuda(dir, loader);
    let tensorrt = cuda.clone().or_else(|| {
        provider_library(dir, "tensorrt", loader)
            .or_else(|| TENSORRT_LIBS.iter().find_map(|l| find(l, loader).err()))
    });
    vec![
        ProviderCheck {
            provider: Provider::Cuda,
            missing: cuda,
        },
        ProviderCheck {
            provider: Provider::TensorRt,
            missing: tensorrt,
        },
    ]
}

/// Every provider in preference order (TensorRT, CUDA, CPU), each usable or the first thing it
/// lacks: when `build_checked`, whether the ONNX Runtime build has it (the runtime must be
/// started), then [`check`]'s libraries and driver. What the daemon's `Providers` property shows.
pub fn report(ort_library: &Path, build_checked: bool, loader: &dyn Loader) -> Vec<ProviderCheck> {
    let mut libs = check(ort_library, loader);
    let mut out = Vec::with_capacity(3);
    for provider in [Provider::TensorRt, Provider::Cuda] {
        let built = if build_checked {
            crate::ort_env::provider_unavailable_reason(provider)
        } else {
            None
        };
        let libraries = libs
            .iter_mut()
            .find(|c| c.provider == provider)
            .and_then(|c| c.missing.take());
        out.push(ProviderCheck {
            provider,
            missing: built.or(libraries),
        });
    }
    out.push(ProviderCheck {
        provider: Provider::Cpu,
        missing: None,
    });
    out
}

fn check_cuda(dir: &Path, loader: &dyn Loader) -> Option<String> {
    if let Some(why) = provider_library(dir, "shared", loader) {
        return Some(why);
    }
    match loader.driver_cuda_version() {
        Err(why) => return Some(format!("no usable NVIDIA driver: {why}")),
        Ok(v) if v / 1000 < CUDA_MAJOR => {
            return Some(format!(
                "the NVIDIA driver supports CUDA {}.{}; ONNX Runtime's GPU providers need CUDA {CUDA_MAJOR} (a newer driver)",
                v / 1000,
                (v % 1000) / 10
            ));
        }
        Ok(_) => {}
    }
    CUDA_LIBS
        .iter()
        .find_map(|l| find(l, loader).err())
        .or_else(|| provider_library(dir, "cuda", loader))
}

/// ONNX Runtime's own library for a provider, next to libonnxruntime (loaded last, so the message
/// names a missing dependency rather than the provider library).
fn provider_library(dir: &Path, which: &str, loader: &dyn Loader) -> Option<String> {
    let path = dir.join(format!("libonnxruntime_providers_{which}.so"));
    if !path.is_file() {
        return Some(format!(
            "{} is not there: this ONNX Runtime is a CPU-only build (the GPU build, with its providers, comes with the package moed-cuda or packaging/onnxruntime/provision.sh --gpu)",
            path.display()
        ));
    }
    loader
        .load(&path)
        .err()
        .map(|why| format!("{} cannot be loaded: {why}", path.display()))
}

/// A library by name on the loader's path, else in [`GPU_LIB_DIR`].
fn find(name: &str, loader: &dyn Loader) -> Result<(), String> {
    if loader.load(Path::new(name)).is_ok() {
        return Ok(());
    }
    let packaged = PathBuf::from(GPU_LIB_DIR).join(name);
    loader
        .load(&packaged)
        .map_err(|_| format!("{name} is missing (not on the library path, not in {GPU_LIB_DIR})"))
}

/// The real loader: `dlopen` through libloading, `cuDriverGetVersion` from libcuda.so.1.
pub struct DlLoader;

impl Loader for DlLoader {
    fn load(&self, name: &Path) -> Result<(), String> {
        // SAFETY: loading runs the library's initializers; these are NVIDIA's and ONNX Runtime's
        // own libraries, loaded as ONNX Runtime itself would load them.
        unsafe { libloading::Library::new(name) }
            .map(drop)
            .map_err(|e| moed_wire::log_line(&e.to_string(), 256))
    }

    fn driver_cuda_version(&self) -> Result<i32, String> {
        // SAFETY: as above; the symbol has the CUDA driver API's documented signature.
        unsafe {
            let lib = libloading::Library::new("libcuda.so.1")
                .map_err(|_| "libcuda.so.1 not found (no NVIDIA driver installed)".to_string())?;
            let get: libloading::Symbol<unsafe extern "C" fn(*mut i32) -> i32> = lib
                .get(b"cuDriverGetVersion\0")
                .map_err(|e| format!("libcuda.so.1 has no cuDriverGetVersion: {e}"))?;
            let mut version = 0;
            match get(&mut version) {
                0 => Ok(version),
                code => Err(format!("cuDriverGetVersion failed (CUresult {code})")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    struct Fake {
        present: HashSet<String>,
        driver: Result<i32, String>,
    }

    impl Loader for Fake {
        fn load(&self, name: &Path) -> Result<(), String> {
            let file = name
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if self.present.contains(file) {
                Ok(())
            } else {
                Err(format!("{file}: cannot open shared object file"))
            }
        }
        fn driver_cuda_version(&self) -> Result<i32, String> {
            self.driver.clone()
        }
    }

    fn machine(
        providers: &[&str],
        libs: &[&str],
        driver: Result<i32, String>,
    ) -> (tempfile::TempDir, PathBuf, Fake) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ort = dir.path().join("libonnxruntime.so.1.32.0");
        std::fs::write(&ort, b"").expect("write");
        let mut present: HashSet<String> = libs.iter().map(|s| s.to_string()).collect();
        for p in providers {
            let name = format!("libonnxruntime_providers_{p}.so");
            std::fs::write(dir.path().join(&name), b"").expect("write");
            present.insert(name);
        }
        (dir, ort, Fake { present, driver })
    }

    fn reasons(checks: &[ProviderCheck]) -> (Option<String>, Option<String>) {
        (checks[0].missing.clone(), checks[1].missing.clone())
    }

    #[test]
    fn the_report_lists_every_provider_in_preference_order() {
        let (_d, ort, fake) = machine(&[], &[], Ok(12040));
        let got = report(&ort, false, &fake);
        let order: Vec<Provider> = got.iter().map(|c| c.provider).collect();
        assert_eq!(order, [Provider::TensorRt, Provider::Cuda, Provider::Cpu]);
        assert_eq!(got[2].missing, None);
        assert!(
            got[1]
                .missing
                .as_deref()
                .is_some_and(|r| r.contains("CPU-only build")),
            "{got:?}"
        );
        let (_d, ort, fake) = machine(&["shared", "cuda"], CUDA_LIBS, Ok(12040));
        let got = report(&ort, false, &fake);
        assert_eq!(got[1].missing, None, "{got:?}");
        assert!(got[0].missing.is_some(), "{got:?}");
    }

    #[test]
    fn the_cpu_only_wheel_is_named() {
        let (_d, ort, fake) = machine(&[], &[], Ok(12040));
        let (cuda, trt) = reasons(&check(&ort, &fake));
        assert!(
            cuda.as_deref()
                .is_some_and(|r| r.contains("CPU-only build")),
            "{cuda:?}"
        );
        assert_eq!(cuda, trt);
    }

    #[test]
    fn no_driver_an_old_driver_and_a_missing_library_are_told_apart() {
        let all: Vec<&str> = CUDA_LIBS.iter().chain(TENSORRT_LIBS).copied().collect();
        let (_d, ort, fake) = machine(
            &["shared", "cuda", "tensorrt"],
            &all,
            Err("libcuda.so.1 not found (no NVIDIA driver installed)".into()),
        );
        let (cuda, _) = reasons(&check(&ort, &fake));
        assert!(
            cuda.as_deref()
                .is_some_and(|r| r.contains("no NVIDIA driver")),
            "{cuda:?}"
        );

        let (_d, ort, fake) = machine(&["shared", "cuda", "tensorrt"], &all, Ok(11080));
        let (cuda, _) = reasons(&check(&ort, &fake));
        assert!(
            cuda.as_deref()
                .is_some_and(|r| r.contains("supports CUDA 11.8")),
            "{cuda:?}"
        );

        let without_cudnn: Vec<&str> = all
            .iter()
            .copied()
            .filter(|l| *l != "libcudnn.so.9")
            .collect();
        let (_d, ort, fake) = machine(&["shared", "cuda", "tensorrt"], &without_cudnn, Ok(12040));
        let (cuda, trt) = reasons(&check(&ort, &fake));
        assert!(
            cuda.as_deref()
                .is_some_and(|r| r.starts_with("libcudnn.so.9 is missing")),
            "{cuda:?}"
        );
        assert_eq!(cuda, trt, "TensorRT needs what CUDA needs");
    }

    #[test]
    fn tensorrt_needs_its_own_libraries_on_top() {
        let (_d, ort, fake) = machine(&["shared", "cuda", "tensorrt"], CUDA_LIBS, Ok(12080));
        let (cuda, trt) = reasons(&check(&ort, &fake));
        assert_eq!(cuda, None);
        assert!(
            trt.as_deref()
                .is_some_and(|r| r.starts_with("libnvinfer.so.10 is missing")),
            "{trt:?}"
        );

        let (_d, ort, fake) = machine(&["shared", "cuda"], CUDA_LIBS, Ok(12080));
        let (_, trt) = reasons(&check(&ort, &fake));
        assert!(
            trt.as_deref()
                .is_some_and(|r| r.contains("libonnxruntime_providers_tensorrt.so is not there")),
            "{trt:?}"
        );
    }
}
