//! Which execution providers can run here and, for each that cannot, the first thing it lacks:
//! the ONNX Runtime build, the provider libraries, the NVIDIA driver, the CUDA and TensorRT
//! libraries (`moed_engine::gpu_libs`), for the library this daemon uses.

use moed_engine::gpu_libs::{self, DlLoader, ProviderCheck};

use super::Service;
use crate::ort_env;

impl Service {
    /// Every provider in preference order, each `missing: None` when usable. Once ONNX Runtime is
    /// started (a model was loaded) the answer also covers the build and is kept: the libraries
    /// of a running process do not change. Before, it names why no library was found, if none is.
    pub fn providers(&self) -> Result<Vec<ProviderCheck>, String> {
        if let Some(known) = self.providers.get() {
            return Ok(known.clone());
        }
        match ort_env::started() {
            Some(rt) => Ok(self
                .providers
                .get_or_init(|| gpu_libs::report(rt.library(), true, &DlLoader))
                .clone()),
            None => {
                let configured = self.config().engine.ort_library;
                let library =
                    ort_env::locate_library(configured.as_deref()).map_err(|e| e.to_string())?;
                Ok(gpu_libs::report(&library, false, &DlLoader))
            }
        }
    }
}
